"""The machine-speed calibration that `make bench` records beside the targets (`bench/bench_machine.py`)."""

from __future__ import annotations

from bench import bench_machine


def test_calibration_reports_both_workloads_in_milliseconds():
    result = bench_machine.run(runs=1)
    assert set(result) == {"machine_python_ms", "machine_numpy_ms", "machine_int8_vnni"}
    assert result["machine_python_ms"] > 0 and result["machine_numpy_ms"] > 0
    assert result["machine_int8_vnni"] in (0.0, 1.0)


def test_python_workload_is_fixed_so_runs_compare():
    # The same work every time: a calibration whose work drifted would not be a scale.
    assert bench_machine._python_workload() == bench_machine._python_workload() > bench_machine.FRAMES * 20


async def test_checkpoint_bench_records_turns_it_can_replay(tmp_path, monkeypatch):
    # The recorder copies each checkpointer call's config; the live config also carries the turn's run-time
    # context (an embedding future holding a lock), which once made every recorded turn fail.
    from bench import bench_checkpoints
    from tests.conftest import make_settings

    monkeypatch.setattr(bench_checkpoints, "CONVERSATIONS", 1)
    monkeypatch.setattr(bench_checkpoints, "TURNS", 2)
    conversations = await bench_checkpoints._record(make_settings(tmp_path / "record"))
    assert len(conversations) == 1 and len(conversations[0]) == 2
    names = [name for turn in conversations[0] for name, _, _ in turn]
    assert "aget_tuple" in names and "aput" in names
    replayed = await bench_checkpoints._replay(make_settings(tmp_path / "replay"), conversations)
    assert len(replayed) == 2

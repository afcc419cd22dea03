"""The machine-speed calibration that `make bench` records beside the targets (`bench/bench_machine.py`)."""

from __future__ import annotations

from bench import bench_machine


def test_calibration_reports_both_workloads_in_milliseconds():
    result = bench_machine.run(runs=1)
    assert set(result) == {"machine_python_ms", "machine_numpy_ms"}
    assert all(value > 0 for value in result.values())


def test_python_workload_is_fixed_so_runs_compare():
    # The same work every time: a calibration whose work drifted would not be a scale.
    assert bench_machine._python_workload() == bench_machine._python_workload() > bench_machine.FRAMES * 20

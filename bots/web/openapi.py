"""The OpenAPI description of the HTTP API, served at /openapi.json and rendered offline at /docs."""

from __future__ import annotations

from typing import Any

ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}


def openapi_spec(version: str) -> dict[str, Any]:
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    retry_after = {"Retry-After": {"description": "seconds to wait before trying again",
                                   "schema": {"type": "integer", "minimum": 1}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchboard API", "version": version,
                 "description": "Ask the support bot; answers stream as Server-Sent Events."},
        "paths": {
            "/": {"get": {"summary": "Service name, version and links (HTML chat page for browsers)",
                          "responses": {"200": {"description": "OK"}}}},
            "/agents": {"get": {"summary": "The agents of the agents file (name, label, description) and their "
                                           "topics as one phrase",
                                "responses": {"200": {"description": "The agents, in file order"}}}},
            "/health": {"get": {"summary": "Store, checkpoints and LLM mode",
                                "responses": {"200": {"description": "healthy (status ok), or degraded: a "
                                                                     "knowledge source's last sync failed and "
                                                                     "its last good documents are used"},
                                              "503": {"description": "a dependency is down"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/chat": {"post": {
                "summary": "Ask a question; the answer streams as SSE",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/ChatRequest"}}}},
                "responses": {
                    "200": {"description": "events start, agent, token, sources, complete or error; while the "
                                           "model is silent a `: keep-alive` comment line every WEB_HEARTBEAT_S "
                                           "(15 s)",
                            "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "400": {"description": "malformed JSON (also: nested too deeply, a number too long, not valid "
                                           "in its charset, not an object)", "content": json_error},
                    "409": {"description": "this message_id was already answered", "content": json_error},
                    "413": {"description": "message or body too long", "content": json_error},
                    "415": {"description": "not application/json, or an unknown charset", "content": json_error},
                    "422": {"description": "empty message, or a session_id/message_id that is not 1-128 of "
                                           "[A-Za-z0-9_.:-]", "content": json_error},
                    "429": {"description": "this client's request rate (WEB_RATE_LIMIT) or concurrent streams "
                                           "(WEB_MAX_STREAMS_PER_CLIENT) are used up", "headers": retry_after,
                            "content": json_error},
                    "503": {"description": "the server is answering all it can (WEB_MAX_ANSWERS) and its queue is "
                                           "full", "headers": retry_after, "content": json_error},
                }}},
            "/handoff": {"post": {
                "summary": "Talk to a person: the conversation is handed to the support team (HANDOFF_WEBHOOK_URL, "
                           "signed); `message` says what happens next",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["session_id"],
                    "properties": {"session_id": {"type": "string"}}}}}},
                "responses": {
                    "200": {"description": "{session_id, message, status}: status is requested, or failed when "
                                           "no person could be reached (message says how to write in)"},
                    "404": {"description": "unknown session", "content": json_error},
                    "413": {"description": "body too long", "content": json_error},
                    "415": {"description": "not application/json, or an unknown charset", "content": json_error},
                    "422": {"description": "no session_id", "content": json_error},
                    "429": {"description": "this client's request rate is used up", "headers": retry_after,
                            "content": json_error},
                }}},
            "/sessions/{session_id}": {
                "parameters": [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {"summary": "Turns, agents and timestamps of a session",
                        "responses": {"200": {"description": "OK"}, "404": {"description": "unknown",
                                                                             "content": json_error}}},
                "delete": {"summary": "Forget a session",
                           "responses": {"204": {"description": "deleted"}, "404": {"description": "unknown"}}},
            },
        },
        "components": {"schemas": {
            "ChatRequest": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "string", "description": "The question"},
                "session_id": {"type": "string", "description": "Continue a conversation (omit to start one)"},
                "message_id": {"type": "string", "description": "Optional id of this message: a retry with the "
                               "same session_id and message_id gets 409 instead of a second answer"}}},
            "Error": ERROR,
        }},
    }


DOCS_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Switchboard API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:860px;margin:2rem auto;padding:0 1rem;color:#1f2a44}
h2{margin-top:2rem}code,pre{background:#f3f5f9;border-radius:4px;padding:.1rem .3rem}pre{padding:.8rem;overflow:auto}
.m{display:inline-block;min-width:4.5rem;font-weight:700}.get{color:#0b7a3b}.post{color:#1652c4}.delete{color:#b3261e}</style>
</head><body><h1>Switchboard API</h1><p>Machine-readable description: <a href="/openapi.json">/openapi.json</a></p>
<div id="ops">Loading…</div><script>
fetch('/openapi.json').then(r=>r.json()).then(spec=>{const out=[];
for(const [path,item] of Object.entries(spec.paths)){for(const [method,op] of Object.entries(item)){
if(method==='parameters')continue;const codes=Object.entries(op.responses||{}).map(([c,r])=>`<li><code>${c}</code> ${r.description}</li>`).join('');
out.push(`<h2><span class="m ${method}">${method.toUpperCase()}</span> <code>${path}</code></h2><p>${op.summary||''}</p><ul>${codes}</ul>`);}}
document.getElementById('ops').innerHTML=out.join('')+'<h2>Example</h2><pre>curl -N -X POST localhost:8000/chat -H "Content-Type: application/json" -d \\'{"message":"Do you comply with GDPR?"}\\'</pre>';});
</script></body></html>"""

"""The OpenAPI description of the HTTP API, served at /openapi.json and rendered offline at /docs."""

from __future__ import annotations

from typing import Any

ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}
# Session and message ids: the whole string (bots/web/server.py SESSION_ID).
ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"}
# WEB_API_KEYS (bots/web/sessions.py): a key as Bearer token or X-API-Key, or the chat page's cookie; none is
# needed while WEB_API_KEYS is empty (the `{}` alternative).
API_SECURITY = [{}, {"bearerKey": []}, {"apiKeyHeader": []}, {"browserCookie": []}]
SECRET_PARAMETER = {"name": "X-Session-Secret", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "The session's secret (the `start` event's session_secret); the chat page's "
                                   "cookie stands in for it"}
# The SSE stream, described as what it is: text of `event:`/`data:` frames and `: keep-alive` comments.
# The SSE stream: in OpenAPI 3.1 the schema of a `text/event-stream` describes each event (its `event` and
# `data` fields); `: keep-alive` comment lines are not events.
SSE_SCHEMA = {
    "type": "object", "required": ["event", "data"],
    "description": "One Server-Sent Event: start {session_id, session_secret}, agent {name, label, reason}, token "
                   "{text}, sources {items}, handoff, then complete {text, …} or error {code, user_message, "
                   "partial_text}; `: keep-alive` comments while the model is silent",
    "properties": {
        "event": {"enum": ["start", "agent", "token", "sources", "handoff", "complete", "error"]},
        "data": {"type": "string", "contentMediaType": "application/json", "description": "the event as JSON"},
    },
}


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
            "/chat": {"get": {"summary": "The chat page (HTML; sets the signed, HttpOnly browser cookie that owns its "
                                         "conversations)",
                              "responses": {"200": {"description": "the page",
                                                    "content": {"text/html": {"schema": {"type": "string"}}}}}},
                      "post": {
                "summary": "Ask a question; the answer streams as SSE. Without session_id a new conversation is "
                           "started (its id and secret are in the `start` event); an existing one needs its secret "
                           "or the chat page's cookie",
                "security": API_SECURITY,
                "parameters": [SECRET_PARAMETER],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}},
                    "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ChatForm"}}}},
                "responses": {
                    "200": {"description": "events start, agent, token, sources, complete or error; while the "
                                           "model is silent a `: keep-alive` comment line every WEB_HEARTBEAT_S "
                                           "(15 s)",
                            "content": {"text/event-stream": {"schema": SSE_SCHEMA}}},
                    "401": {"description": "WEB_API_KEYS is set and no known key (nor the chat page's cookie) "
                                           "was sent", "content": json_error},
                    "403": {"description": "session_id names someone else's conversation (no session_secret)",
                            "content": json_error},
                    "400": {"description": "malformed JSON (also: nested too deeply, a number too long, not valid "
                                           "in its charset, not an object), or a form that cannot be parsed",
                            "content": json_error},
                    "409": {"description": "this message_id was already answered", "content": json_error},
                    "413": {"description": "message or body too long (a form: larger than 5 files of "
                                           "MAX_ATTACHMENT_MB)", "content": json_error},
                    "415": {"description": "neither application/json nor multipart/form-data, or an unknown "
                                           "charset", "content": json_error},
                    "422": {"description": "empty message, a session_id/message_id that is not 1-128 of "
                                           "[A-Za-z0-9_.:-], or a form with more than 5 files",
                            "content": json_error},
                    "429": {"description": "this client's request rate (WEB_RATE_LIMIT) or concurrent streams "
                                           "(WEB_MAX_STREAMS_PER_CLIENT) are used up", "headers": retry_after,
                            "content": json_error},
                    "503": {"description": "the server is answering all it can (WEB_MAX_ANSWERS) and its queue is "
                                           "full", "headers": retry_after, "content": json_error},
                }}},
            "/handoff": {"post": {
                "security": API_SECURITY,
                "parameters": [SECRET_PARAMETER],
                "summary": "Talk to a person: the conversation is handed to the support team (HANDOFF_WEBHOOK_URL, "
                           "signed); `message` says what happens next",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["session_id"],
                    "properties": {"session_id": ID_SCHEMA, "session_secret": {"type": "string"}}}}}},
                "responses": {
                    "200": {"description": "{session_id, message, status}: status is requested, or failed when "
                                           "no person could be reached (message says how to write in)"},
                    "401": {"description": "WEB_API_KEYS is set and no known key was sent", "content": json_error},
                    "404": {"description": "unknown session, or not yours", "content": json_error},
                    "413": {"description": "body too long", "content": json_error},
                    "415": {"description": "not application/json, or an unknown charset", "content": json_error},
                    "422": {"description": "no session_id", "content": json_error},
                    "429": {"description": "this client's request rate is used up", "headers": retry_after,
                            "content": json_error},
                }}},
            "/sessions/{session_id}": {
                "parameters": [{"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}},
                               SECRET_PARAMETER],
                "get": {"summary": "Turns, agents and timestamps of a session (yours: its secret or your cookie)",
                        "security": API_SECURITY,
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                                          "type": "object", "required": ["session_id"]}}}},
                                      "401": {"description": "no API key", "content": json_error},
                                      "404": {"description": "unknown, or not yours", "content": json_error}}},
                "delete": {"summary": "Forget a session (yours: its secret or your cookie)",
                           "security": API_SECURITY,
                           "responses": {"204": {"description": "deleted"},
                                         "401": {"description": "no API key", "content": json_error},
                                         "404": {"description": "unknown, or not yours", "content": json_error}}},
            },
        },
        "components": {"schemas": {
            "ChatRequest": {"type": "object", "required": ["message"], "properties": {
                "message": {"type": "string", "minLength": 1, "pattern": "\\S", "description": "The question (not only "
                            "spaces; control and format characters do not count, and alone are refused with 422)"},
                "session_id": {"anyOf": [ID_SCHEMA, {"type": "null"}], "description": "Continue a conversation "
                               "(omit or null to start one; a new id of your own is claimed)"},
                "session_secret": {"type": "string", "description": "The conversation's secret (or send the "
                                   "X-Session-Secret header)"},
                "message_id": {"anyOf": [ID_SCHEMA, {"type": "null"}], "description": "Optional id of this "
                               "message: a retry with the same session_id and message_id gets 409 instead of a "
                               "second answer"}}},
            "ChatForm": {"type": "object", "description": "The ChatRequest's fields as form fields, with files: text, "
                         "logs, code, CSV, JSON and PDFs are read (cut to MAX_ATTACHMENT_CHARS), images are shown to "
                         "a model with vision (OPENAI_VISION); a file over MAX_ATTACHMENT_MB or of another type is "
                         "named in a sentence at the start of the answer. Without a message, the files are asked "
                         "about.", "properties": {
                "message": {"type": "string"}, "session_id": {"type": "string"}, "message_id": {"type": "string"},
                "file": {"type": "array", "maxItems": 5, "items": {"type": "string", "format": "binary"}}}},
            "Error": ERROR,
        }, "securitySchemes": {
            "bearerKey": {"type": "http", "scheme": "bearer", "description": "one of WEB_API_KEYS"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "browserCookie": {"type": "apiKey", "in": "cookie", "name": "switchboard_browser"},
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

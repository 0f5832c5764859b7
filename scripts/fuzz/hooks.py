"""schemathesis hooks for scripts/fuzz-api.

Each operation gets the key its `security` names; the principals those keys act for are never
disabled or revoked (that would turn the rest of the run into 401s); and well-formed requests
name the tenant and reviewer that exist, so they reach the server's logic instead of a 404.
"""
import os

import schemathesis

# The OpenAPI security schemes (crates/countersign-server/src/openapi.rs) and the keys
# scripts/fuzz-api made for them.
KEYS = {
    "admin_key": os.environ["FUZZ_ADMIN_KEY"],
    "reviewer_key": os.environ["FUZZ_REVIEWER_KEY"],
    "agent_key": os.environ["FUZZ_AGENT_KEY"],
    "executor_key": os.environ["FUZZ_EXECUTOR_KEY"],
    "metrics_token": os.environ["FUZZ_METRICS_TOKEN"],
}
TENANT = os.environ.get("FUZZ_TENANT", "default")
REVIEWER_ID = os.environ["FUZZ_REVIEWER_ID"]
REVIEWER_EMAIL = os.environ["FUZZ_REVIEWER_EMAIL"]
# Nothing listens there (and the run has no network but loopback).
CALLBACK_URL = "http://127.0.0.1:9/callback"
# Ids of the keys, user and agent above.
PROTECTED_IDS = set(filter(None, os.environ.get("FUZZ_PROTECTED_IDS", "").split(",")))


def key_for(operation):
    """The first scheme of the operation's `security` that we hold a key for."""
    for requirement in operation.definition.raw.get("security") or []:
        for scheme in requirement:
            if scheme in KEYS:
                return KEYS[scheme]
    return None


@schemathesis.auth(refresh_interval=None, retry_on=[])
class PerOperationKey:
    def get(self, case, context):
        return key_for(context.operation)

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def filter_case(context, case):
    """Never change or remove the fuzzer's own principals."""
    if case.method.upper() == "GET":
        return True
    return not any(str(v) in PROTECTED_IDS for v in (case.path_parameters or {}).values())


def is_positive(case):
    meta = getattr(case, "meta", None)
    try:
        return meta is None or meta.generation.mode.is_positive
    except AttributeError:
        return True


@schemathesis.hook
def map_case(context, case):
    if not is_positive(case):
        return case
    params = case.path_parameters or {}
    if "proxy_id" in params:
        params["proxy_id"] = TENANT
    if "tenant" in params:
        params["tenant"] = TENANT
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.path == "/ciba/authorize" and "userId" in body:
        body["userId"] = REVIEWER_ID
    if "approval-groups" in case.operation.path and isinstance(body.get("members"), list):
        # Members are existing users, each listed once.
        members = [m for m in body["members"] if isinstance(m, dict)][:1]
        for member in members:
            member["email"] = REVIEWER_EMAIL
        body["members"] = members or body["members"]
    # Callback URLs are checked by a URL parser (IDNA host names, IPv4 numbers, ports), which
    # no pattern mirrors; well-formed cases use a URL that parses.
    for field in ("url", "webhook_url", "backchannel_client_notification_endpoint"):
        if isinstance(body.get(field), str):
            body[field] = CALLBACK_URL
    if isinstance(body.get("group_webhook_urls"), dict):
        body["group_webhook_urls"] = {group: CALLBACK_URL for group in body["group_webhook_urls"]}
    # A test email needs the address to write to (Slack and Teams tests take none).
    if params.get("channel") == "email" and case.method.upper() == "POST" and not body.get("to"):
        case.body = {**body, "to": REVIEWER_EMAIL}
        case.media_type = "application/json"
        body = case.body
    # On PUT a group's `id`, when given, is the one in the path.
    if case.method.upper() == "PUT" and "group_id" in params and body.get("id") is not None:
        body["id"] = params["group_id"]
    # A tenant's first Slack settings need both secrets, and its Teams settings a webhook;
    # later ones may leave them out to keep the stored values.
    if case.operation.path == "/v1/admin/notification-channels/slack" and isinstance(case.body, dict):
        body.setdefault("bot_token", "xoxb-fuzz")
        body.setdefault("signing_secret", "fuzz-signing-secret")
        body["bot_token"] = body["bot_token"] or "xoxb-fuzz"
        body["signing_secret"] = body["signing_secret"] or "fuzz-signing-secret"
    if case.operation.path == "/v1/admin/notification-channels/teams" and isinstance(case.body, dict):
        if not body.get("webhook_url"):
            body["webhook_url"] = CALLBACK_URL
    return case


# Error codes for rules a JSON Schema cannot state: what exists in the tenant (an approval
# group, a user), and the grammars of CEL conditions and tool-name globs. A well-formed request
# the server turns down with one of these is not a contract failure.
STATE_OR_GRAMMAR_CODES = {"unknown_reference", "unknown_user_id", "invalid_condition", "invalid_pattern"}
# State again: a resource the tenant has not allowed, an Idempotency-Key the run already used
# with another body.
STATE_OR_GRAMMAR_CODES |= {"invalid_target", "idempotency_key_reused"}
# Rules about what free-form JSON (tool arguments, CIBA context, authorization details) holds
# at any depth: numbers beyond ±(2^53 - 1) and hidden characters in keys. A schema could only
# say this with a recursive JSON-value schema, which generators handle badly.
FREE_FORM_CODES = {"invalid_number", "invalid_text", "invalid_authorization_details"}
FREE_FORM_OPERATIONS = {
    "/ciba/authorize",
    "/v1/guard/{proxy_id}/tool",
    "/v1/guard/{proxy_id}/policies/evaluate",
    "/oidc/bc-authorize",
}


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if type(failure).__name__ != "RejectedPositiveData":
        return True
    try:
        body = response.json()
        code = body["error"]["code"] if isinstance(body["error"], dict) else body["error"]
    except Exception:
        return True
    if code in FREE_FORM_CODES and case.operation.path in FREE_FORM_OPERATIONS:
        return False
    return code not in STATE_OR_GRAMMAR_CODES

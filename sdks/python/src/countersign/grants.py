"""Offline verification of Countersign grants, for the services that execute approved actions."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import jwt
import rfc8785

from ._errors import GrantVerificationError

__all__ = ["verify_grant", "arguments_digest", "MAX_SAFE_INTEGER"]

#: RFC 8785 reads numbers as IEEE doubles: integers beyond this share a digest with neighbours.
MAX_SAFE_INTEGER = 2**53 - 1

_jwks_clients: dict[str, jwt.PyJWKClient] = {}
_jwks_lock = threading.Lock()


def _check_numbers(value: Any, path: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise GrantVerificationError(
                f"{path} holds the integer {value}, beyond ±(2^53 − 1): canonical JSON cannot "
                "keep it exactly, so it cannot be bound to an approval"
            )
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_numbers(item, f"{path}[{index}]")


def arguments_digest(arguments: Any) -> str:
    """The hex SHA-256 of the RFC 8785 canonical JSON of ``arguments``, as the server computes
    it. Raises ``GrantVerificationError`` for integers beyond ±(2^53 − 1)."""
    _check_numbers(arguments, "arguments")
    try:
        canonical = rfc8785.dumps(arguments)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise GrantVerificationError(f"arguments cannot be canonicalized: {exc}") from exc
    return hashlib.sha256(canonical).hexdigest()


def _jwks_client(jwks_url: str) -> jwt.PyJWKClient:
    with _jwks_lock:
        client = _jwks_clients.get(jwks_url)
        if client is None:
            client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300)
            _jwks_clients[jwks_url] = client
        return client


def verify_grant(
    token: str,
    *,
    jwks_url: str,
    issuer: str,
    audience: str,
    tenant: str | None = None,
    expected_arguments: Any = None,
    expected_tool: str | None = None,
    algorithms: Sequence[str] = ("ES256", "EdDSA"),
    leeway: float = 0,
    jwks_client: jwt.PyJWKClient | None = None,
) -> dict[str, Any]:
    """Verify a grant offline and return its claims; raise ``GrantVerificationError`` otherwise.

    Checks, as the server's README asks of every verifier: the signature with the JWKS key its
    ``kid`` names, ``typ`` ``at+jwt``, ``iss`` == ``issuer``, ``exp``, ``aud`` == ``audience``,
    ``tid`` == ``tenant`` (when given), and, when ``expected_arguments`` is given (the arguments
    about to be run, or a CIBA request's context), their RFC 8785 SHA-256 against the grant's
    ``arguments_sha256`` / ``context_sha256``; ``expected_tool`` against its ``tool``. It does
    not remember ``approval_id``s: use introspection with ``consume=True`` for single use.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise GrantVerificationError(f"not a JWT: {exc}") from exc
    if str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
        raise GrantVerificationError(f"typ is {header.get('typ')!r}, not 'at+jwt'")
    if header.get("alg") not in algorithms:
        raise GrantVerificationError(f"alg {header.get('alg')!r} is not accepted")
    try:
        key = (jwks_client or _jwks_client(jwks_url)).get_signing_key_from_jwt(token).key
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": ["exp", "iss", "aud", "tid", "jti", "approval_id"]},
        )
    except jwt.PyJWTError as exc:
        raise GrantVerificationError(str(exc)) from exc
    if tenant is not None and claims.get("tid") != tenant:
        raise GrantVerificationError(f"tid is {claims.get('tid')!r}, not {tenant!r}")
    details = claims.get("authorization_details")
    detail: dict[str, Any] = {}
    if isinstance(details, list) and details and isinstance(details[-1], dict):
        detail = details[-1]
    if expected_tool is not None and detail.get("tool") != expected_tool:
        raise GrantVerificationError(f"the grant is for tool {detail.get('tool')!r}, not {expected_tool!r}")
    if expected_arguments is not None:
        granted = detail.get("arguments_sha256") or detail.get("context_sha256")
        if not granted:
            raise GrantVerificationError("the grant carries no arguments digest")
        if arguments_digest(expected_arguments) != granted:
            raise GrantVerificationError("the arguments differ from the approved ones")
    return claims

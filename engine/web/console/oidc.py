"""Sign-in through an OpenID Connect provider (``FLOWBOT_OIDC_ISSUER``, client id and secret).

The authorization code flow with PKCE (Authlib's): the provider's discovery document says where to
send the person and where to trade the code; the ID token is checked with joserfc, Authlib's JOSE
library (signature against the provider's JWKS, issuer, audience, expiry, nonce). The person is
the token's email; they are an admin when a claim says so (``FLOWBOT_OIDC_ADMIN_CLAIM``) or when
``FLOWBOT_ADMINS`` names them, a member otherwise. State, nonce and the PKCE verifier travel in a
short-lived signed cookie, never in the server's memory, so any web process can finish a sign-in another one began.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from engine.ops.actor import Role, role_of
from engine.web.console.people_pages import app_of, safe_next
from engine.web.console.render import message
from engine.web.console.session import SIGNER_KEY, is_https, sign_in, viewer_of

routes = web.RouteTableDef()

COOKIE = "flowbot_oidc"
#: How long a person may take at the provider.
FLOW_SECONDS = 600
_discovery: dict[str, tuple[float, dict[str, Any]]] = {}


async def discover(issuer: str) -> dict[str, Any]:
    """The provider's discovery document (cached for an hour)."""
    cached = _discovery.get(issuer)
    if cached and cached[0] > time.monotonic():
        return cached[1]
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url) as resp:
        resp.raise_for_status()
        doc: dict[str, Any] = await resp.json(content_type=None)
    _discovery[issuer] = (time.monotonic() + 3600, doc)
    return doc


def _redirect_uri(request: web.Request) -> str:
    settings = app_of(request).settings
    if settings.public_url:
        return settings.public_url + "/console/oidc/callback"
    scheme = "https" if is_https(request) else request.scheme
    return f"{scheme}://{request.host}/console/oidc/callback"


@routes.get("/oidc/start")
async def start(request: web.Request) -> web.StreamResponse:
    settings = app_of(request).settings
    try:
        doc = await discover(str(settings.oidc_issuer))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return message(request, "Sign-in unavailable", f"The identity provider does not answer: {exc}",
                       status=503, kind="error", back="/console/signin")
    flow = {"state": secrets.token_urlsafe(24), "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48), "next": safe_next(request.query.get("next")),
            "exp": int(time.time()) + FLOW_SECONDS}
    query = urlencode({
        "response_type": "code", "client_id": settings.oidc_client_id, "redirect_uri": _redirect_uri(request),
        "scope": "openid email profile", "state": flow["state"], "nonce": flow["nonce"],
        "code_challenge": create_s256_code_challenge(flow["verifier"]), "code_challenge_method": "S256",
    })
    response = web.HTTPFound(f"{doc['authorization_endpoint']}?{query}")
    response.set_cookie(COOKIE, request.app[SIGNER_KEY].sign(flow), path="/console/oidc", httponly=True,
                        samesite="Lax", secure=is_https(request), max_age=FLOW_SECONDS)
    raise response


def _refuse(request: web.Request, why: str, status: int = 400) -> web.Response:
    return message(request, "Sign-in failed", why, status=status, kind="error", back="/console/signin")


@routes.get("/oidc/callback")
async def callback(request: web.Request) -> web.StreamResponse:
    settings = app_of(request).settings
    flow = request.app[SIGNER_KEY].unsign(request.cookies.get(COOKIE, ""))
    if flow is None or int(flow.get("exp") or 0) < time.time():  # type: ignore[call-overload]
        return _refuse(request, "The sign-in took too long or did not start here: try again.")
    if request.query.get("error"):
        return _refuse(request, f"The identity provider said: {request.query.get('error')}", 403)
    if not secrets.compare_digest(str(request.query.get("state", "")), str(flow["state"])):
        return _refuse(request, "The sign-in's state does not match: try again.")
    try:
        doc = await discover(str(settings.oidc_issuer))
        tokens = await _trade(doc, request.query.get("code", ""), _redirect_uri(request), str(flow["verifier"]),
                              str(settings.oidc_client_id), str(settings.oidc_client_secret))
        claims = await _check(doc, tokens.get("id_token", ""), str(settings.oidc_issuer),
                              str(settings.oidc_client_id), str(flow["nonce"]))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _refuse(request, f"The identity provider does not answer: {exc}", 503)
    except (JoseError, ValueError, KeyError) as exc:
        return _refuse(request, f"The identity provider's answer is not valid: {exc}", 403)
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email or claims.get("email_verified") is False:
        return _refuse(request, "The identity provider gave no verified email.", 403)
    granted = Role.ADMIN if admin_by_claim(claims, settings.oidc_admin_claim) else Role.MEMBER
    sign_in(viewer_of(request), email.strip().lower(), role_of(email.strip(), settings.admins, granted).value)
    response = web.HTTPSeeOther(str(flow["next"]))
    response.del_cookie(COOKIE, path="/console/oidc")
    raise response


def admin_by_claim(claims: dict[str, Any], spec: str | None) -> bool:
    """Whether the ID token's claims make the person an admin by ``FLOWBOT_OIDC_ADMIN_CLAIM``:
    ``name`` (the claim is true) or ``name=value`` (the claim equals value, or is a list holding
    it, as ``groups`` claims are)."""
    if not spec:
        return False
    name, has_value, value = spec.partition("=")
    claim = claims.get(name.strip())
    if not has_value:
        return claim is True or (isinstance(claim, str) and claim.lower() == "true")
    value = value.strip()
    if isinstance(claim, list):
        return value in [str(c) for c in claim]
    return claim is not None and str(claim) == value


async def _trade(doc: dict[str, Any], code: str, redirect_uri: str, verifier: str, client_id: str,
                 secret: str) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier, "client_id": client_id}
    headers = {}
    # One client authentication only (RFC 6749 2.3): HTTP Basic, the default, unless the provider
    # says it takes the secret in the form only.
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    if "client_secret_basic" in methods:
        pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    else:
        form["client_secret"] = secret
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.post(doc["token_endpoint"], data=form, headers=headers) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise ValueError(f"token endpoint answered {resp.status}: {text[:200]}")
    tokens = json.loads(text)
    if not isinstance(tokens, dict):
        raise ValueError("token endpoint answered no object")
    return tokens


async def _check(doc: dict[str, Any], id_token: str, issuer: str, client_id: str, nonce: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
            http.get(doc["jwks_uri"]) as resp:
        resp.raise_for_status()
        keys = KeySet.import_key_set(await resp.json(content_type=None))
    token = jwt.decode(id_token, keys, algorithms=["RS256", "ES256", "PS256"])
    registry = jwt.JWTClaimsRegistry(
        leeway=60, iss={"essential": True, "values": [issuer, issuer.rstrip("/")]},
        aud={"essential": True, "value": client_id}, nonce={"essential": True, "value": nonce},
        exp={"essential": True}, sub={"essential": True},
    )
    registry.validate(token.claims)
    return dict(token.claims)

"""A small OpenID Connect provider on loopback for the tests: discovery, JWKS, authorize (the person
is already signed in there and consents at once), token (checks the client secret and the PKCE
verifier; answers a real RS256-signed ID token)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey


class Provider:
    """The provider's state: its key, its client, the codes it handed out."""

    def __init__(self, client_id: str = "flowbot", client_secret: str = "s3cret", email: str = "olga@example.com"):
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.client_id, self.client_secret, self.email = client_id, client_secret, email
        self.codes: dict[str, dict[str, Any]] = {}
        self.issuer = ""
        self.tamper_nonce = False
        #: More claims of the ID tokens it signs (``groups``...).
        self.claims: dict[str, Any] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.issuer, "authorization_endpoint": self.issuer + "/authorize",
                                  "token_endpoint": self.issuer + "/token", "jwks_uri": self.issuer + "/jwks",
                                  "id_token_signing_alg_values_supported": ["RS256"]})

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        assert q["client_id"] == self.client_id and q["response_type"] == "code"
        assert q["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"]}
        raise web.HTTPFound(q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]}))

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = self.codes.pop(str(form.get("code")), None)
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if grant is None or request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier"))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "u-1", "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": "forged" if self.tamper_nonce else grant["nonce"], "email": self.email,
                  "email_verified": True, **self.claims}
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
        return web.json_response({"access_token": "at", "token_type": "Bearer", "id_token": id_token})

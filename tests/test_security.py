"""Who may call the service: API keys from a keys file, OIDC tokens signed by a key the test makes and serves as a
JWKS over real local HTTP, scopes, refusals, security headers, allowed hosts, strict bodies and the request log."""

from __future__ import annotations

import json
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from api import create_app
from clv.service import keys
from clv.service.settings import Settings, SettingsError
from tests.servers import ApiProcess, run_script

PREDICT = "/predict/clv"
ISSUER = "https://login.bank.test/"
AUDIENCE = "clv-api"


def app_with_keys(settings: Settings, tmp_path: Path, **update: object) -> tuple[TestClient, dict[str, str]]:
    """An app whose keys file holds three keys: predict only, predict and read, and every scope."""
    path = tmp_path / "api_keys.json"
    made = {
        "predictor": keys.add_key(path, "predictor", ["clv:predict"]),
        "reader": keys.add_key(path, "reader", ["clv:predict", "clv:read"]),
        "ops": keys.add_key(path, "ops", list(keys.SCOPES)),
    }
    own = settings.model_copy(update={"api_keys_file": path, "log_file": tmp_path / "api.log", **update})
    return TestClient(create_app(own)), made


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---- API keys -------------------------------------------------------------------------------------------


def test_keys_file_holds_hashes_only_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    key = keys.add_key(path, "batch-job", ["clv:predict", "clv:portfolio"])
    text = path.read_text()
    assert key not in text and key[4:] not in text
    assert json.loads(text)["keys"][0] | {"created_at": "-"} == {
        "name": "batch-job",
        "sha256": keys.digest(key),
        "scopes": ["clv:predict", "clv:portfolio"],
        "created_at": "-",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 40 and key != keys.add_key(path, "another", ["clv:read"])
    beside = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert beside == ["api_keys.json"]  # nothing half-written left beside it


def test_keys_command_adds_lists_and_revokes(tmp_path: Path) -> None:
    env = {"CLV_API_KEYS_FILE": str(tmp_path / "api_keys.json")}
    added = run_script("api.py", "keys", "add", "scoring", "--scopes", "clv:predict,clv:portfolio", **env)
    assert added.returncode == 0, added.stderr
    key = added.stdout.splitlines()[-1]
    assert key.startswith("clv_") and " " not in key and key not in added.stdout.splitlines()[0]
    listed = run_script("api.py", "keys", "list", **env)
    assert listed.returncode == 0 and "scoring\tclv:predict,clv:portfolio" in listed.stdout
    assert key not in listed.stdout and keys.digest(key) not in listed.stdout
    again = run_script("api.py", "keys", "add", "scoring", **env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "'scoring' exists" in again.stderr
    bad = run_script("api.py", "keys", "add", "x", "--scopes", "clv:everything", **env)
    assert bad.returncode == 2 and "--scopes" in bad.stderr and "clv:predict" in bad.stderr
    assert run_script("api.py", "keys", "revoke", "scoring", **env).returncode == 0
    assert "scoring" not in run_script("api.py", "keys", "list", **env).stdout
    gone = run_script("api.py", "keys", "revoke", "scoring", **env)
    assert gone.returncode == 2 and "no key named 'scoring'" in gone.stderr


def test_routes_need_a_credential_with_their_scope(settings: Settings, tmp_path: Path, example: dict) -> None:
    client, made = app_with_keys(settings, tmp_path)
    with client:
        missing = client.post(PREDICT, json=example)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == 'Bearer realm="clv"'
        wrong = client.post(PREDICT, json=example, headers=bearer("clv_not-a-key"))
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
        assert client.post(PREDICT, json=example, headers=bearer(made["predictor"])).status_code == 200
        assert client.post(PREDICT, json=example, headers={"X-API-Key": made["predictor"]}).status_code == 200
        batch = client.post("/predict/clv/batch", json={"customers": [example]}, headers=bearer(made["predictor"]))
        assert batch.status_code == 200
        denied = client.get("/portfolio", headers=bearer(made["predictor"]))
        assert denied.status_code == 403 and "clv:portfolio" in denied.json()["detail"]
        assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
        for path, scope in (("/model", "clv:read"), ("/openapi.json", "clv:read"), ("/docs", "clv:read")):
            assert client.get(path).status_code == 401, path
            refused = client.get(path, headers=bearer(made["predictor"]))
            assert refused.status_code == 403 and scope in refused.json()["detail"], path
            assert client.get(path, headers=bearer(made["reader"])).status_code == 200, path
        assert client.get("/metrics", headers=bearer(made["reader"])).status_code == 403
        assert client.get("/metrics", headers=bearer(made["ops"])).status_code == 200
        assert client.get("/portfolio", headers=bearer(made["ops"])).status_code == 404  # allowed: no run yet
        for path in ("/livez", "/readyz", "/", "/static/page.js"):
            assert client.get(path).status_code == 200, path


def test_health_is_open_but_its_details_need_clv_read(settings: Settings, tmp_path: Path) -> None:
    client, made = app_with_keys(settings, tmp_path)
    with client:
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/health", headers=bearer(made["predictor"])).json() == {"status": "ok"}
        details = client.get("/health", headers=bearer(made["reader"])).json()
        assert {"model_version", "trained_at", "uptime_seconds", "synthetic_data"} <= set(details)
        assert client.get("/health", headers=bearer("clv_revoked")).status_code == 401


def test_a_revoked_key_is_refused_without_a_restart(settings: Settings, tmp_path: Path, example: dict) -> None:
    client, made = app_with_keys(settings, tmp_path, reload_seconds=0.2)
    with client:
        assert client.post(PREDICT, json=example, headers=bearer(made["predictor"])).status_code == 200
        keys.revoke_key(tmp_path / "api_keys.json", "predictor")
        added = keys.add_key(tmp_path / "api_keys.json", "late", ["clv:predict"])
        time.sleep(0.3)
        assert client.post(PREDICT, json=example, headers=bearer(made["predictor"])).status_code == 401
        assert client.post(PREDICT, json=example, headers=bearer(added)).status_code == 200
        assert client.post(PREDICT, json=example, headers=bearer(made["reader"])).status_code == 200


def test_the_rate_limit_counts_per_caller_on_every_protected_route(
    settings: Settings, tmp_path: Path, example: dict
) -> None:
    client, made = app_with_keys(settings, tmp_path, rate_limit="2/minute")
    with client:
        ops = bearer(made["ops"])
        assert [client.post(PREDICT, json=example, headers=ops).status_code for _ in range(2)] == [200, 200]
        limited = client.get("/model", headers=ops)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
        assert client.post(PREDICT, json=example, headers=bearer(made["reader"])).status_code == 200  # its own
        assert client.get("/health", headers=ops).status_code == 200  # open routes spend nothing


# ---- OIDC tokens ---------------------------------------------------------------------------------------


class Issuer:
    """An OIDC issuer's signing keys (an RSA and an EC key the test makes), served as a JWKS by http.server on a
    free loopback port; it counts the fetches."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published = ["rsa-1", "ec-1"]
        self.fetches = 0
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def jwks(self) -> dict:
        published = []
        for kid in self.published:
            key = self.rsa if kid.startswith("rsa") else self.ec
            jwk = json.loads(jwt.algorithms.get_default_algorithms()[self.alg(kid)].to_jwk(key.public_key()))
            published.append(jwk | {"kid": kid, "alg": self.alg(kid), "use": "sig"})
        return {"keys": published}

    @staticmethod
    def alg(kid: str) -> str:
        return "RS256" if kid.startswith("rsa") else "ES256"

    def token(self, kid: str = "rsa-1", **claims: object) -> str:
        """A token signed by the key `kid` names, with clv:predict unless `claims` say otherwise (None: left out)."""
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "analyst-7", "iat": now, "exp": now + 600}
        payload = {k: v for k, v in ({**payload, "scope": "clv:predict"} | claims).items() if v is not None}
        key = self.rsa if kid.startswith("rsa") else self.ec
        return jwt.encode(payload, key, algorithm=self.alg(kid), headers={"kid": kid})

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    served = Issuer()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def oidc_client(settings: Settings, issuer: Issuer, tmp_path: Path) -> Iterator[TestClient]:
    own = settings.model_copy(
        update={
            "oidc_issuer": ISSUER,
            "oidc_audience": AUDIENCE,
            "oidc_jwks_url": issuer.url,
            "log_file": tmp_path / "api.log",
        }
    )
    with TestClient(create_app(own)) as client:
        yield client


def test_valid_rs256_and_es256_tokens_are_accepted_with_their_scopes(
    oidc_client: TestClient, issuer: Issuer, example: dict
) -> None:
    for kid in ("rsa-1", "ec-1"):
        token = issuer.token(kid, scope="clv:predict clv:read")
        assert oidc_client.post(PREDICT, json=example, headers=bearer(token)).status_code == 200, kid
        assert oidc_client.get("/model", headers=bearer(token)).status_code == 200, kid
        denied = oidc_client.get("/portfolio", headers=bearer(token))
        assert denied.status_code == 403 and "clv:portfolio" in denied.json()["detail"], kid
    as_list = issuer.token(scope=None, scp=["clv:portfolio"])  # Azure's and Okta's claim
    assert oidc_client.get("/portfolio", headers=bearer(as_list)).status_code == 404  # allowed; no run yet
    assert oidc_client.post(PREDICT, json=example, headers=bearer(as_list)).status_code == 403


def hs256_with_the_public_key(issuer: Issuer) -> str:
    """The algorithm-confusion attack: an HMAC token keyed with the issuer's public key (made by hand, as PyJWT
    itself refuses to sign with a PEM key)."""
    import base64
    import hashlib
    import hmac

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    now = int(time.time())
    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 600, "scope": "clv:predict"}
    body = part(json.dumps(claims).encode())
    signature = hmac.new(issuer.public_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{part(signature)}"


def test_bad_tokens_are_401_invalid_token(oidc_client: TestClient, issuer: Issuer, example: dict) -> None:
    now = int(time.time())
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 600}, None, algorithm="none")
    bad = {
        "expired": issuer.token(exp=now - 120, iat=now - 900),
        "not yet valid": issuer.token(nbf=now + 600),
        "wrong audience": issuer.token(aud="another-api"),
        "wrong issuer": issuer.token(iss="https://evil.test/"),
        "alg none": unsigned,
        "HS256 with the public key": hs256_with_the_public_key(issuer),
        "signed by another key": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 600},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        ),
    }
    for why, token in bad.items():
        response = oidc_client.post(PREDICT, json=example, headers=bearer(token))
        assert response.status_code == 401, why
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"], why
        assert token not in response.text, why


def test_an_unknown_kid_fetches_the_keys_again_once_not_per_request(
    oidc_client: TestClient, issuer: Issuer, example: dict
) -> None:
    tokens = oidc_client.app.state.credentials.tokens
    assert oidc_client.post(PREDICT, json=example, headers=bearer(issuer.token())).status_code == 200
    fetched = issuer.fetches
    tokens.fetched = time.monotonic() - 61  # a minute on: the issuer has rotated in a key since the last fetch
    issuer.published.append("rsa-2")
    assert oidc_client.post(PREDICT, json=example, headers=bearer(issuer.token("rsa-2"))).status_code == 200
    assert issuer.fetches == fetched + 1
    storm = [issuer.token(f"rsa-unknown-{i}") for i in range(20)]
    assert {oidc_client.post(PREDICT, json=example, headers=bearer(t)).status_code for t in storm} == {401}
    assert issuer.fetches == fetched + 1  # within the minute: not one fetch more
    issuer.published.remove("rsa-2")


def test_oidc_settings_go_together(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="CLV_OIDC_ISSUER, CLV_OIDC_AUDIENCE and CLV_OIDC_JWKS_URL"):
        create_app(settings.model_copy(update={"oidc_issuer": ISSUER}))


# ---- what every answer carries; hosts; strict bodies --------------------------------------------------


def test_every_answer_carries_the_security_headers(client: TestClient, example: dict) -> None:
    answers = (("GET", "/", "'self'"), ("GET", "/static/page.js", "'self'"), ("GET", "/health", "'none'"))
    for method, path, sources in (*answers, ("POST", PREDICT, "'none'"), ("GET", "/nowhere", "'none'")):
        response = client.request(method, path, json=example if method == "POST" else None)
        policy = response.headers["Content-Security-Policy"]
        assert f"default-src {sources}" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert client.post(PREDICT, json=example).headers["Cache-Control"] == "no-store"
    assert client.get("/nowhere").headers["Cache-Control"] == "no-store"
    assert client.get("/").headers["Cache-Control"] == "no-cache"
    docs = client.get("/docs").headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in docs and "script-src 'self' 'unsafe-inline'" in docs


def test_hosts_other_than_loopback_names_get_400_by_default(settings: Settings, tmp_path: Path) -> None:
    default = settings.model_copy(update={"allowed_hosts": "", "log_file": tmp_path / "api.log"})
    with TestClient(create_app(default), base_url="http://localhost:8000") as client:
        assert client.get("/livez").status_code == 200
        for host in ("127.0.0.1:8000", "[::1]:8000", "LOCALHOST"):
            assert client.get("/livez", headers={"Host": host}).status_code == 200, host
        for host in ("testserver", "bank.example", "evil.test:8000", "127.0.0.1.evil.test"):
            assert client.get("/livez", headers={"Host": host}).status_code == 400, host


def test_an_unknown_field_is_422_naming_it_and_the_seed_body_is_200(client: TestClient, example: dict) -> None:
    assert client.post(PREDICT, json=example).status_code == 200
    response = client.post(PREDICT, json={**example, "emial": "victor@example.com"})
    assert response.status_code == 422 and [e["field"] for e in response.json()["detail"]] == ["emial"]
    nested = {**example, "products": [{**example["products"][0], "balanse": 10}]}
    assert [e["field"] for e in client.post(PREDICT, json=nested).json()["detail"]] == ["products[0].balanse"]
    assert "victor" not in response.text


# ---- the request log; real servers ---------------------------------------------------------------------


def test_log_names_the_caller_escapes_control_characters_never_holds_a_key(
    settings: Settings, tmp_path: Path, example: dict
) -> None:
    client, made = app_with_keys(settings, tmp_path)
    with client:
        client.post(PREDICT, json=example, headers=bearer(made["predictor"]))
        client.get("/a%0Aforged 200 0.1ms -%0D%1B[31m", headers=bearer(made["reader"]))
        client.get("/health")
    lines = (tmp_path / "api.log").read_text().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith(" predictor") and " POST /predict/clv 200 " in lines[0]
    assert "/a\\x0aforged\\x20200\\x200.1ms\\x20-\\x0d\\x1b[31m 404 " in lines[1]
    assert lines[1].endswith(" -")  # an open route: the credential is not looked at
    assert lines[2].endswith(" -")
    text = "\n".join(lines)
    assert all(key not in text and key[4:20] not in text for key in made.values())
    assert stat.S_IMODE((tmp_path / "api.log").stat().st_mode) == 0o600


def test_the_service_with_a_key_from_the_keys_command(tmp_path: Path, settings: Settings, example: dict) -> None:
    keys_file = tmp_path / "api_keys.json"
    added = run_script("api.py", "keys", "add", "branch-7", "--scopes", "clv:predict", CLV_API_KEYS_FILE=str(keys_file))
    key = added.stdout.splitlines()[-1]
    server = ApiProcess(
        tmp_path,
        CLV_MODEL_DIR=str(settings.model_dir),
        CLV_DATA_DIR=str(settings.data_dir),
        CLV_API_KEYS_FILE=str(keys_file),
    )
    try:
        base = server.ready()
        assert httpx.post(f"{base}{PREDICT}", json=example).status_code == 401
        answered = httpx.post(f"{base}{PREDICT}", json=example, headers=bearer(key))
        assert answered.status_code == 200
        request_id = answered.headers["X-Request-ID"]
        assert httpx.get(f"{base}/livez", headers={"Host": "bank.example"}).status_code == 400
    finally:
        server.stop()
    log = (tmp_path / "api.log").read_text()
    assert any(line.endswith(" branch-7") and request_id in line for line in log.splitlines())
    assert key not in log and key not in server.log.read_text()
    assert stat.S_IMODE((tmp_path / "api.log").stat().st_mode) == 0o600


def test_it_refuses_to_serve_beyond_loopback_without_authentication(tmp_path: Path) -> None:
    done = run_script("api.py", CLV_HOST="0.0.0.0", CLV_API_KEYS_FILE=str(tmp_path / "none.json"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "CLV_HOST='0.0.0.0'" in done.stderr
    assert "python api.py keys add" in done.stderr and "CLV_AUTH=off" in done.stderr


def test_clv_auth_off_serves_beyond_loopback_with_a_warning(tmp_path: Path, settings: Settings) -> None:
    server = ApiProcess(
        tmp_path,
        CLV_HOST="0.0.0.0",
        CLV_AUTH="off",
        CLV_MODEL_DIR=str(settings.model_dir),
        CLV_DATA_DIR=str(settings.data_dir),
    )
    try:
        base = server.ready()
        assert httpx.get(f"{base}/model").status_code == 200
    finally:
        server.stop()
    assert "CLV_AUTH=off: every route is open" in server.log.read_text()


def test_a_503_body_carries_the_request_id_and_no_path(settings: Settings, tmp_path: Path, example: dict) -> None:
    empty = settings.model_copy(
        update={"model_dir": tmp_path / "no-models", "train_on_start": False, "log_file": tmp_path / "api.log"}
    )
    with TestClient(create_app(empty)) as client:
        for response in (client.post(PREDICT, json=example), client.get("/health"), client.get("/readyz")):
            assert response.status_code == 503
            assert response.json()["request_id"] == response.headers["X-Request-ID"]
            assert str(tmp_path) not in response.text and "no-models" not in response.text


def test_clv_auth_on_refuses_every_protected_route_until_a_key_is_added(
    settings: Settings, tmp_path: Path, example: dict
) -> None:
    path = tmp_path / "api_keys.json"
    strict = settings.model_copy(
        update={"auth": "on", "api_keys_file": path, "reload_seconds": 0.1, "log_file": tmp_path / "api.log"}
    )
    with TestClient(create_app(strict)) as client:
        assert client.post(PREDICT, json=example).status_code == 401
        assert client.get("/health").json() == {"status": "ok"}
        key = keys.add_key(path, "first", ["clv:predict"])
        time.sleep(0.2)
        assert client.post(PREDICT, json=example, headers={"X-API-Key": key}).status_code == 200

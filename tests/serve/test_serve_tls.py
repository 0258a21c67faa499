"""`foundry serve` over HTTPS, as a real process with two workers: certificates made by
the test (trustme), clients that verify them (the official `openai` client, httpx), TLS
1.1 refused, HSTS, and mutual TLS on the admin routes. The model was trained with
FOUNDRY_ENCRYPTION_KEY set, so the workers load an encrypted package and the key's name
is stored encrypted: in transit and at rest, end to end."""

from __future__ import annotations

import os
import sqlite3
import ssl

import httpx
import pytest
from tests.serve.serve_app_support import assert_matches, bearer, run_cli, train_toy

import foundry.crypto as crypto
from foundry.serve.loadtest import Server, free_port, serve_command

trustme = pytest.importorskip("trustme")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow  # trains a model and starts two HTTPS workers (~20 s idle)

ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def https(tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    key = crypto.new_key()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(crypto.ENV_KEY, key)
        toy = train_toy(root)
    home = toy.home
    ca, admins = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    admins.cert_pem.write_to_path(str(root / "admins-ca.pem"))
    admin_cert = admins.issue_cert("operator@example.com")
    admin_cert.private_key_and_cert_chain_pem.write_to_path(str(root / "admin.pem"))
    env = {**os.environ, "FOUNDRY_HOME": str(home), "FOUNDRY_ADMIN_TOKEN": ADMIN,
           crypto.ENV_KEY: key}
    env.pop("FOUNDRY_DATABASE_URL", None)
    api_key = run_cli(root, env, "keys", "create", "--name", "tls", "--plan", "enterprise")
    command = [*serve_command(toy.ref, free_port(), workers=2),
               "--tls-cert", str(root / "server.pem"), "--tls-key", str(root / "server.pem"),
               "--tls-client-ca", str(root / "admins-ca.pem")]
    with Server(command, env=env, log=root / "server.log", workers=2,
                tls_ca=root / "ca.pem") as running:
        yield {"url": running.url, "root": root, "key": api_key, "toy": toy,
               "port": running.port, "master_key": key}


def _verifying(https, *, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(https["root"] / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(https["root"] / "admin.pem"))
    return context


def test_openai_client_and_httpx_verify_the_certificate(https):
    with httpx.Client(verify=_verifying(https)) as http:
        client = openai.OpenAI(base_url=f"{https['url']}/v1", api_key=https["key"],
                               http_client=http, max_retries=0)
        assert [m.id for m in client.models.list().data] == [https["toy"].name]
        answer = http.post(f"{https['url']}/v1/models/{https['toy'].name}/predict",
                           json={"records": https["toy"].records(3)},
                           headers=bearer(https["key"]))
    assert answer.status_code == 200, answer.text
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(crypto.ENV_KEY, https["master_key"])
        expected = https["toy"].expected(https["toy"].records(3))
    assert_matches(answer.json()["predictions"], expected, "tier")
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    # Verification is really on: a client that does not trust the test CA is refused.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https['url']}/readyz")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_and_plain_http_are_refused(https):
    def handshake(version: ssl.TLSVersion) -> str:
        context = _verifying(https)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer TLS 1.1
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = version
        with httpx.Client(verify=context) as client:
            return client.get(f"{https['url']}/readyz").headers["strict-transport-security"]

    assert handshake(ssl.TLSVersion.TLSv1_2) == "max-age=31536000"
    with pytest.raises(httpx.ConnectError):
        handshake(ssl.TLSVersion.TLSv1_1)
    # No plain listener: an HTTP request to the port gets no HTTP answer.
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        httpx.get(f"http://127.0.0.1:{https['port']}/readyz")


def test_admin_routes_need_a_client_certificate(https):
    headers = bearer(ADMIN)
    with httpx.Client(verify=_verifying(https)) as anonymous:
        refused = anonymous.get(f"{https['url']}/admin/keys", headers=headers)
        public = anonymous.get(f"{https['url']}/v1/models")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "client_certificate_required"
    assert public.status_code == 200  # prediction clients need no certificate
    with httpx.Client(verify=_verifying(https, client_cert=True)) as operator:
        listed = operator.get(f"{https['url']}/admin/keys", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [k["name"] for k in listed.json()["keys"]] == ["tls"]  # decrypted for the admin


def test_the_served_package_and_the_key_name_are_encrypted_at_rest(https):
    home = https["toy"].home
    files = [p for p in (home / "models").rglob("*") if p.is_file()]
    assert files and all(p.read_bytes().startswith(crypto.MAGIC) for p in files)
    with sqlite3.connect(home / "foundry.db") as db:
        (name,) = db.execute("SELECT name FROM api_keys").fetchone()
    assert name.startswith(crypto.FIELD_PREFIX)


def test_https_only_needs_a_certificate_and_cert_needs_key():
    from foundry.config.load import load_serve_config
    from foundry.errors import ConfigError
    from foundry.serve.tls import is_loopback

    with pytest.raises(ConfigError, match="https_only is set but no certificate"):
        load_serve_config(None, {"tls": {"https_only": True}})
    with pytest.raises(ConfigError, match="both cert and key"):
        load_serve_config(None, {"tls": {"cert": "server.pem"}})
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")] \
        == [True, True, True, False, False]

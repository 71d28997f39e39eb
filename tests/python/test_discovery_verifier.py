"""Independent verifier for `irsa-agent keygen` + `discovery` + `aws --fetch-thumbprint`.

Nothing here uses irsa-agent's code: keys, kids, JWTs, TLS and JWKS handling
come from `cryptography` and PyJWT. A throwaway CA and server certificate are
made on the fly; the discovery output is served over HTTPS on 127.0.0.1 and
checked the way AWS STS checks a web-identity token: fetch
`<iss>/.well-known/openid-configuration`, require `issuer == iss`, follow
`jwks_uri`, pick the key by the token's `kid`, verify signature, audience and
times.

Needs: pytest, PyJWT[crypto], cryptography. The binary is $IRSA_AGENT_BIN
(default target/debug/irsa-agent under the repo root).
"""

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("IRSA_AGENT_BIN", REPO / "target" / "debug" / "irsa-agent"))
AUDIENCE = "sts.amazonaws.com"
SUB = "system:serviceaccount:ns:name"
GCP_FIELDS = {"kty", "alg", "use", "kid", "n", "e", "x", "y", "crv"}


def run(*args, env_extra=None, check=True):
    if not BIN.exists():
        pytest.fail(f"{BIN} not found: build it first (cargo build) or set IRSA_AGENT_BIN")
    env = {k: v for k, v in os.environ.items() if k not in ("IRSA_AGENT_LOG", "SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(env_extra or {})
    proc = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def python_kid(public_pem: bytes) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, base64url without padding."""
    key = serialization.load_pem_public_key(public_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64url(hashlib.sha256(der).digest())


# --- a throwaway PKI and an HTTPS server -----------------------------------


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("irsa-agent test CA"))
        .issuer_name(_name("irsa-agent test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (d / "ca.pem").write_bytes(ca.public_bytes(pem))
    # The server sends leaf + CA, so the last certificate it sends is the CA.
    (d / "chain.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (d / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {
        "dir": d,
        "ca_pem": d / "ca.pem",
        "ca_sha1": hashlib.sha1(ca.public_bytes(serialization.Encoding.DER)).hexdigest(),
    }


class Handler(SimpleHTTPRequestHandler):
    def guess_type(self, path):
        if str(path).endswith(("/jwks", "keys.json")):
            return "application/jwk-set+json"
        return "application/json"

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def server(pki, tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["dir"] / "chain.pem", pki["dir"] / "leaf.key")
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"root": root, "base": f"https://127.0.0.1:{httpd.server_address[1]}"}
    httpd.shutdown()


# --- what AWS STS does with a web-identity token ------------------------------


def fetch_json(url, cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
        assert resp.status == 200
        return json.loads(resp.read()), resp.headers.get("Content-Type")


def sts_verify(token, cafile, audience=AUDIENCE):
    iss = jwt.decode(token, options={"verify_signature": False})["iss"]
    doc, _ = fetch_json(iss.rstrip("/") + "/.well-known/openid-configuration", cafile)
    assert doc["issuer"] == iss, "discovery issuer must equal the token's iss exactly"
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["subject_types_supported"] == ["public"]
    keys, ctype = fetch_json(doc["jwks_uri"], cafile)
    assert ctype == "application/jwk-set+json"
    header = jwt.get_unverified_header(token)
    matches = [k for k in keys["keys"] if k["kid"] == header["kid"]]
    assert len(matches) == 1, f"no unique key with kid {header['kid']}"
    jwk = matches[0]
    assert jwk["use"] == "sig" and jwk["alg"] == header["alg"]
    assert header["alg"] in doc["id_token_signing_alg_values_supported"]
    assert set(jwk) <= GCP_FIELDS
    key = jwt.PyJWK(jwk).key
    return jwt.decode(token, key, algorithms=[header["alg"]], audience=audience, issuer=iss)


def apiserver_token(private_pem, alg, kid, iss, **over):
    """Claims and header as kube-apiserver writes them (pkg/serviceaccount/claims.go)."""
    now = int(time.time())
    claims = {
        "aud": [AUDIENCE],
        "exp": now + 3600,
        "iat": now,
        "iss": iss,
        "nbf": now,
        "sub": SUB,
        "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "name", "uid": "0000"}},
    }
    claims.update(over)
    key = serialization.load_pem_private_key(private_pem, password=None)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize("kind,alg", [("rsa-2048", "RS256"), ("ec-p256", "ES256")])
def test_token_verifies_like_aws_sts(kind, alg, server, pki, tmp_path):
    priv, pub = tmp_path / "sa.key", tmp_path / "sa.pub"
    out = run("keygen", "--output", "json", "--type", kind, "--private-key", priv, "--public-key", pub)
    kid = json.loads(out.stdout)["kid"]
    assert kid == python_kid(pub.read_bytes())
    assert priv.stat().st_mode & 0o777 == 0o600

    # A second key in the JWKS: the rotation case, the verifier must pick by kid.
    old_priv, old_pub = tmp_path / "old.key", tmp_path / "old.pub"
    run("keygen", "--type", "ec-p256", "--private-key", old_priv, "--public-key", old_pub)

    issuer = f"{server['base']}/{kind}"
    run(
        "discovery", "--issuer", issuer, "--allow-port", "--out", server["root"] / kind,
        "--public-key", old_pub, "--public-key", pub,
    )
    jwks = json.loads((server["root"] / kind / "openid" / "v1" / "jwks").read_text())
    assert [k["kid"] for k in jwks["keys"]] == [python_kid(old_pub.read_bytes()), kid]

    token = apiserver_token(priv.read_bytes(), alg, kid, issuer)
    claims = sts_verify(token, pki["ca_pem"])
    assert claims["sub"] == SUB

    # The old key also verifies its own tokens (both published).
    old_kid = python_kid(old_pub.read_bytes())
    assert sts_verify(apiserver_token(old_priv.read_bytes(), "ES256", old_kid, issuer), pki["ca_pem"])

    # What STS rejects, rejected here too.
    with pytest.raises(jwt.InvalidAudienceError):
        sts_verify(token, pki["ca_pem"], audience="someone-else")
    forged = apiserver_token(old_priv.read_bytes(), "ES256", kid, issuer) if alg == "ES256" else None
    if forged:
        with pytest.raises(jwt.InvalidSignatureError):
            sts_verify(forged, pki["ca_pem"])
    with pytest.raises(AssertionError, match="issuer"):
        sts_verify(apiserver_token(priv.read_bytes(), alg, kid, issuer + "/"), pki["ca_pem"])


def test_keys_json_layout_is_served_and_verifies(server, pki, tmp_path):
    priv, pub = tmp_path / "k.key", tmp_path / "k.pub"
    kid = json.loads(run("keygen", "--output", "json", "--type", "ec-p256", "--private-key", priv, "--public-key", pub).stdout)["kid"]
    issuer = f"{server['base']}/flat"
    out = run(
        "discovery", "--output", "json", "--issuer", issuer, "--allow-port", "--layout", "keys-json",
        "--out", server["root"] / "flat", "--public-key", pub,
    )
    result = json.loads(out.stdout)
    assert [f["url"] for f in result["files"]] == [
        f"{issuer}/.well-known/openid-configuration",
        f"{issuer}/keys.json",
    ]
    assert any("port" in w for w in result["warnings"])
    assert sts_verify(apiserver_token(priv.read_bytes(), "ES256", kid, issuer), pki["ca_pem"])


def test_jwks_only_is_the_bare_jwks_gcp_accepts(tmp_path):
    priv, pub = tmp_path / "k.key", tmp_path / "k.pub"
    run("keygen", "--private-key", priv, "--public-key", pub)
    out = run("discovery", "--issuer", "https://oidc.example.com", "--public-key", pub, "--jwks-only")
    jwks = json.loads(out.stdout)
    assert list(jwks) == ["keys"]
    (key,) = jwks["keys"]
    assert set(key) <= GCP_FIELDS
    assert key["kid"] == python_kid(pub.read_bytes())
    # The JWK is the same key as the PEM file.
    pem_numbers = serialization.load_pem_public_key(pub.read_bytes()).public_numbers()
    assert jwt.PyJWK(key).key.public_numbers() == pem_numbers


def test_fetch_thumbprint_takes_the_top_ca_the_server_sends(server, pki, tmp_path):
    issuer = f"{server['base']}/rsa-2048"
    out = run(
        "aws", "--output", "json", "--issuer", issuer, "--allow-port", "--fetch-thumbprint",
        "--namespace", "ns", "--service-account", "name", "--out", tmp_path / "trusted",
        env_extra={"SSL_CERT_FILE": str(pki["ca_pem"])},
    )
    result = json.loads(out.stdout)
    provider = json.loads((tmp_path / "trusted" / "oidc-provider.json").read_text())
    assert provider["ThumbprintList"] == [pki["ca_sha1"]]
    assert provider["Url"] == issuer
    assert "chain verified" in result["thumbprint"]["source"]
    assert not any("not trusted" in w for w in result["warnings"])

    # Without the CA in the trust store: refused, nothing written...
    proc = run(
        "aws", "--issuer", issuer, "--allow-port", "--fetch-thumbprint",
        "--out", tmp_path / "untrusted", check=False,
    )
    assert proc.returncode == 1
    assert "is not trusted by this machine" in proc.stderr and "--insecure-skip-tls-verify" in proc.stderr
    assert not (tmp_path / "untrusted").exists()
    # ...unless told to skip the check: the same thumbprint, with a warning.
    out = run(
        "aws", "--output", "json", "--issuer", issuer, "--allow-port", "--fetch-thumbprint",
        "--insecure-skip-tls-verify", "--out", tmp_path / "untrusted",
    )
    result = json.loads(out.stdout)
    assert result["thumbprint"]["value"] == pki["ca_sha1"]
    assert any("was NOT verified" in w for w in result["warnings"])


def test_fetch_thumbprint_needs_allow_port_for_a_port(server, tmp_path):
    proc = run("aws", "--issuer", server["base"], "--fetch-thumbprint", "--out", tmp_path / "o", check=False)
    assert proc.returncode == 1
    assert "--issuer" in proc.stderr and "port" in proc.stderr
    assert not (tmp_path / "o").exists()

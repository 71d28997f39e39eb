"""The package routes, on this machine: the .deb installed with dpkg (CI runs
as root), the .rpm's file list read with Debian's rpm, install.sh into a
DESTDIR, the man pages rendered with groff, the bash completion loaded by bash.

The packages come from packaging/build-packages.sh, which tests/run runs
before pytest and names in $IRSA_AGENT_PACKAGES. Without them (cargo-deb or
cargo-generate-rpm missing) those tests skip on a developer's machine and
fail in CI ($CI set); so do the tests whose tool (rpm, dpkg-deb, groff, zsh,
fish) is not installed.

The binary defaults to the debug build in cargo's target directory
(packaging/target-dir.sh: $CARGO_TARGET_DIR may move it from ./target).
"""

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def target_dir():
    """Cargo's target directory, as packaging/target-dir.sh finds it."""
    r = subprocess.run(
        ["sh", "-c", ". packaging/target-dir.sh && target_dir"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(r.stdout.strip())


BIN = Path(os.environ.get("IRSA_AGENT_BIN") or target_dir() / "debug" / "irsa-agent")
PACKAGES = Path(os.environ.get("IRSA_AGENT_PACKAGES", REPO / "target" / "packages"))
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
# Files cargo-deb adds by itself (Debian policy), not in packaging/files.txt.
DEB_EXTRAS = {"/usr/share/doc/irsa-agent/copyright"}
CONFIG = "/etc/irsa-agent/config.yaml"


def file_list(zsh):
    """packaging/files.txt resolved for PREFIX=/usr: dest -> (source, mode, config)."""
    out = {}
    for line in (REPO / "packaging" / "files.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        dest = f[1].replace("{prefix}", "/usr").replace("{zsh}", zsh)
        out[dest] = (f[0], int(f[2], 8), f[3:] == ["config"])
    return out


def deb_list():
    """As the .deb installs it: man pages gzip-compressed by cargo-deb."""
    out = {}
    for dest, entry in file_list("/usr/share/zsh/vendor-completions").items():
        if "/share/man/man" in dest:
            dest += ".gz"
        out[dest] = entry
    return out


def one(pattern):
    found = sorted(PACKAGES.glob(pattern))
    if not found:
        msg = f"no {pattern} in {PACKAGES}: run packaging/build-packages.sh (needs cargo-deb, cargo-generate-rpm)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    assert len(found) == 1, found
    return found[0]


def need(*tools):
    """Skip when a tool is missing on a developer's machine; fail in CI ($CI
    set), where .ci/run installs every one of them."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        msg = f"{', '.join(missing)} not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def run(*argv, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 600)
    return subprocess.run([str(a) for a in argv], **kw)


def files_under(root):
    """Regular files under root: "/rel/path" -> (bytes, permission bits, mtime_ns)."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out["/" + str(p.relative_to(root))] = (p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def deb_contents(deb):
    """The .deb's regular files: path -> permission bits, from dpkg-deb -c."""
    out = {}
    for line in run("dpkg-deb", "-c", deb, check=True).stdout.splitlines():
        f = line.split()
        if f[0].startswith("-"):
            out[f[5].lstrip(".")] = perm_bits(f[0])
    return out


def perm_bits(s):
    """'-rwxr-xr-x' -> 0o755."""
    bits = 0
    for ch in s[1:10]:
        bits = (bits << 1) | (ch != "-")
    return bits


# ---- .deb ------------------------------------------------------------------


def test_the_deb_installs_every_file_runs_and_purges_cleanly(tmp_path):
    deb = one("irsa-agent_*.deb")
    need("dpkg", "dpkg-query")
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root (CI runs as root)")
    if run("dpkg-query", "-W", "-f=${Status}", "irsa-agent").stdout.startswith("install ok installed"):
        pytest.skip("irsa-agent is installed on this machine already; not replacing it")
    expected = deb_list()
    try:
        r = run("dpkg", "-i", deb)
        assert r.returncode == 0, r.stdout + r.stderr
        for dest, (_, mode, _) in expected.items():
            st = os.lstat(dest)
            assert stat.S_ISREG(st.st_mode), dest
            assert stat.S_IMODE(st.st_mode) == mode, f"{dest}: {oct(stat.S_IMODE(st.st_mode))} != {oct(mode)}"
            assert st.st_uid == 0 and st.st_gid == 0, dest
        owned = set(run("dpkg", "-L", "irsa-agent", check=True).stdout.split())
        assert set(expected) | DEB_EXTRAS <= owned
        conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "irsa-agent", check=True).stdout
        assert CONFIG in conffiles, conffiles

        r = run("/usr/bin/irsa-agent", "--version", check=True)
        assert r.stdout.strip() == f"irsa-agent {VERSION}"
        r = run(
            "/usr/bin/irsa-agent",
            "--root",
            REPO / "tests/fixtures/kubeadm-default",
            "--output",
            "json",
            "detect",
            check=True,
        )
        assert '"distro":"kubeadm"' in r.stdout, r.stdout
        r = run("man", "--warnings", "-P", "cat", "irsa-agent", env={**os.environ, "MANWIDTH": "80"})
        assert r.returncode == 0 and "EXIT STATUS" in r.stdout, r.stderr

        r = run("dpkg", "-r", "irsa-agent")
        assert r.returncode == 0, r.stdout + r.stderr
        left = [d for d in expected if os.path.lexists(d)]
        assert left == [CONFIG], "dpkg -r keeps only the conffile"
        r = run("dpkg", "-P", "irsa-agent")
        assert r.returncode == 0, r.stdout + r.stderr
        left = [d for d in set(expected) | DEB_EXTRAS if os.path.lexists(d)]
        assert left == [], f"dpkg -P left {left}"
        for d in ["/etc/irsa-agent", "/usr/share/doc/irsa-agent", "/usr/share/ansible/roles/irsa_agent"]:
            assert not os.path.exists(d), d
        assert run("dpkg-query", "-W", "irsa-agent").returncode != 0 or not run(
            "dpkg-query", "-W", "-f=${Status}", "irsa-agent"
        ).stdout.startswith("install")
    finally:
        run("dpkg", "-P", "irsa-agent")


# ---- .rpm ------------------------------------------------------------------


def test_the_rpm_holds_the_file_list_with_modes_and_a_noreplace_config():
    rpm = one("irsa-agent-*.rpm")
    need("rpm")
    expected = file_list("/usr/share/zsh/site-functions")
    r = run("rpm", "-qlp", rpm, check=True)
    assert sorted(r.stdout.split()) == sorted(expected)
    r = run("rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEMODES:octal} %{FILEFLAGS:fflags}\n]", rpm, check=True)
    for line in r.stdout.splitlines():
        path, mode, *flags = line.split()
        _, want_mode, config = expected[path]
        assert int(mode, 8) == stat.S_IFREG | want_mode, line
        assert ("c" in "".join(flags) and "n" in "".join(flags)) == config, line
    assert run("rpm", "-qp", "--configfiles", rpm, check=True).stdout.split() == [CONFIG]
    r = run("rpm", "-qp", "--qf", "%{NAME} %{VERSION}", rpm, check=True)
    assert r.stdout == f"irsa-agent {VERSION}"


# ---- install.sh -----------------------------------------------------------


def install_sh(*args, destdir, prefix="/usr"):
    env = {**os.environ, "DESTDIR": str(destdir), "PREFIX": prefix}
    r = run("sh", REPO / "install.sh", *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_install_sh_stages_the_debs_file_set_idempotently_and_uninstalls(tmp_path):
    deb = one("irsa-agent_*.deb")
    need("dpkg-deb")
    stage = tmp_path / "stage"
    install_sh(destdir=stage)
    installed = files_under(stage)
    in_deb = {p: m for p, m in deb_contents(deb).items() if p not in DEB_EXTRAS}
    assert {p: v[1] for p, v in installed.items()} == in_deb

    out = install_sh(destdir=stage)
    assert "nothing changed" in out, out
    assert files_under(stage) == installed, "a second run touched a file"

    out = install_sh("--uninstall", destdir=stage)
    assert files_under(stage) == {}, out
    assert not (stage / "etc/irsa-agent").exists()


def test_the_release_tarball_installs_the_same_file_set_without_a_toolchain(tmp_path):
    tarball = one(f"irsa-agent-{VERSION}-*-linux.tar.gz")
    deb = one("irsa-agent_*.deb")
    need("dpkg-deb")
    run("tar", "-xzf", tarball, "-C", tmp_path, check=True)
    unpacked = tmp_path / f"irsa-agent-{VERSION}"
    assert not (unpacked / "Cargo.toml").exists(), "the tarball is a release, not a checkout"
    stage = tmp_path / "stage"
    # No cargo on PATH: the release installs its own binary, built before.
    env = {**os.environ, "DESTDIR": str(stage), "PREFIX": "/usr", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    r = run("sh", unpacked / "install.sh", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    installed = files_under(stage)
    in_deb = {p: m for p, m in deb_contents(deb).items() if p not in DEB_EXTRAS}
    assert {p: v[1] for p, v in installed.items()} == in_deb
    assert installed["/usr/bin/irsa-agent"][0] == (unpacked / "target/release/irsa-agent").read_bytes()


def test_install_sh_never_replaces_the_operators_config(tmp_path):
    stage = tmp_path / "stage"
    install_sh(destdir=stage, prefix="/usr/local")
    config = stage / CONFIG.lstrip("/")
    config.write_text("issuer: https://oidc.example.com/mine\n")
    (stage / "usr/local/bin/irsa-agent").unlink()
    out = install_sh(destdir=stage, prefix="/usr/local")
    assert "installed " + str(stage) + "/usr/local/bin/irsa-agent" in out
    assert config.read_text() == "issuer: https://oidc.example.com/mine\n"
    # The unit starts the binary where PREFIX put it.
    unit = (stage / "usr/local/lib/systemd/system/irsa-agent.service").read_text()
    assert "ExecStart=/usr/local/bin/irsa-agent apply --config /etc/irsa-agent/config.yaml" in unit
    out = install_sh("--uninstall", destdir=stage, prefix="/usr/local")
    assert "kept" in out and config.exists()
    assert set(files_under(stage)) == {CONFIG}


def test_install_sh_refuses_without_root_or_destdir():
    # A directory the unprivileged user can read (pytest's tmp_path is 0700).
    tmp_path = Path(tempfile.mkdtemp(prefix="irsa-agent-install-"))
    tmp_path.chmod(0o755)
    script = tmp_path / "install.sh"
    shutil.copy(REPO / "install.sh", script)
    script.chmod(0o755)
    argv = ["sh", str(script)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    env = {k: v for k, v in os.environ.items() if k not in ("DESTDIR", "PREFIX")}
    try:
        r = run(*argv, env=env, cwd=tmp_path)
    finally:
        shutil.rmtree(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "needs root: run it with sudo, or set DESTDIR" in r.stderr, r.stderr


# ---- man pages and completions --------------------------------------------


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    out = tmp_path_factory.mktemp("assets")
    run(BIN, "generate", out, check=True)
    return out


def test_every_man_page_renders_without_warnings(assets):
    need("groff", "man")
    pages = sorted((assets / "man").glob("*.1"))
    assert len(pages) == 8
    for page in pages:
        r = run("groff", "-man", "-Tutf8", "-ww", page)
        assert r.returncode == 0 and r.stderr == "", f"{page.name}: {r.stderr}"
        text = re.sub(r".\x08", "", r.stdout)  # groff's overstrike for bold
        assert "NAME" in text and "SYNOPSIS" in text, text
    r = run("man", "--warnings", "-l", "-P", "cat", assets / "man" / "irsa-agent.1", env={**os.environ, "MANWIDTH": "80"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = re.sub(r".\x08", "", r.stdout)
    for want in ["EXIT STATUS", "rolled back", "/etc/irsa-agent/config.yaml", "irsa-agent-apply(1)"]:
        assert want in text, want


BASH_COMPLETE = r"""
set -e
[ -f /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion
. "$1"
func=$(complete -p irsa-agent | sed -E 's/.*-F ([^ ]+).*/\1/')
shift
COMP_WORDS=("$@")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMPREPLY=()
"$func" irsa-agent "${COMP_WORDS[$COMP_CWORD]}" "${COMP_WORDS[$COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(assets, *words):
    r = run("bash", "-c", BASH_COMPLETE, "complete", assets / "completions" / "irsa-agent.bash", *words)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_bash_completion_loads_and_completes_commands_and_flags(assets):
    assert {"apply", "detect", "verify", "rollback"} <= set(complete(assets, "irsa-agent", ""))
    assert complete(assets, "irsa-agent", "ap") == ["apply"]
    flags = complete(assets, "irsa-agent", "apply", "--")
    assert {"--issuer", "--config", "--check", "--diff", "--no-restart"} <= set(flags)


@pytest.mark.parametrize("shell,name", [("zsh", "_irsa-agent"), ("fish", "irsa-agent.fish")])
def test_zsh_and_fish_completions_parse(assets, shell, name):
    need(shell)
    r = run(shell, "-n", assets / "completions" / name)
    assert r.returncode == 0, r.stderr


def test_the_fish_completion_completes_flags(assets):
    need("fish")
    script = f"source {assets / 'completions' / 'irsa-agent.fish'}; complete -C 'irsa-agent apply --is'"
    r = run("fish", "--no-config", "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "--issuer", r.stdout


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_tool_skips_outside_ci_and_fails_under_it(monkeypatch, ci):
    # The rule every package test goes through (rpm, dpkg-deb, groff, zsh,
    # fish): a developer's machine without the tool skips, CI fails.
    tool = "irsa-agent-no-such-tool"
    assert shutil.which(tool) is None
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match=tool):
        need("sh", tool)
    need("sh")  # present: neither

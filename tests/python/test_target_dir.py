"""tests/run and packaging/build-*.sh find cargo's output wherever cargo puts
it: with $CARGO_TARGET_DIR set they ask cargo (packaging/target-dir.sh)
instead of looking in ./target. Cheap: no build, the function itself and
build-assets.sh with a binary placed in a custom target directory.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def target_dir(env, cwd=REPO):
    r = subprocess.run(
        ["sh", "-c", ". packaging/target-dir.sh && target_dir"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def env_without(*names, **extra):
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


def need_cargo():
    if shutil.which("cargo") is None:
        if os.environ.get("CI"):
            pytest.fail("cargo is not on PATH")
        pytest.skip("cargo is not on PATH")


def test_cargo_target_dir_is_where_the_scripts_look(tmp_path):
    need_cargo()
    custom = tmp_path / "elsewhere"
    env = env_without("CARGO_BUILD_TARGET_DIR", CARGO_TARGET_DIR=str(custom))
    assert target_dir(env) == str(custom)
    # A relative one is relative to the checkout, as cargo takes it.
    env = env_without("CARGO_BUILD_TARGET_DIR", CARGO_TARGET_DIR="rel-target")
    assert target_dir(env) == str(REPO / "rel-target")


def test_without_cargo_the_variable_or_target(tmp_path):
    # An unpacked release: no Cargo.toml, no cargo.
    env = env_without("CARGO_TARGET_DIR", PATH="/usr/bin:/bin")
    shutil.copytree(REPO / "packaging", tmp_path / "packaging")
    assert target_dir(env, cwd=tmp_path) == str(tmp_path / "target")
    env["CARGO_TARGET_DIR"] = str(tmp_path / "t")
    assert target_dir(env, cwd=tmp_path) == str(tmp_path / "t")


def test_build_assets_takes_the_binary_from_cargo_target_dir(tmp_path):
    need_cargo()
    bin_ = Path(os.environ.get("IRSA_AGENT_BIN") or Path(target_dir(dict(os.environ))) / "debug" / "irsa-agent")
    if not bin_.exists():
        msg = f"no {bin_}: cargo build first (tests/run does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    custom = tmp_path / "custom-target"
    (custom / "release").mkdir(parents=True)
    (custom / "release" / "irsa-agent").symlink_to(bin_)
    out = tmp_path / "assets"
    env = env_without("CARGO_BUILD_TARGET_DIR", CARGO_TARGET_DIR=str(custom))
    # No BINARY argument: the default is the release build in cargo's target dir.
    r = subprocess.run(
        ["sh", "packaging/build-assets.sh", "", str(out)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert (out / "man" / "irsa-agent.1").is_file()
    assert (out / "completions" / "irsa-agent.bash").is_file()
    # Without it there, the error names the place cargo reports.
    (custom / "release" / "irsa-agent").unlink()
    r = subprocess.run(
        ["sh", "packaging/build-assets.sh", "", str(out)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert f"no binary at {custom}/release/irsa-agent" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "script", ["tests/run", "packaging/build-assets.sh", "packaging/build-packages.sh", "packaging/build-release.sh"]
)
def test_every_script_asks_cargo_for_the_target_dir(script):
    text = (REPO / script).read_text()
    code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    assert ". packaging/target-dir.sh" in code, script
    # Cargo's outputs (debug/, release/) only through target_dir, never ./target.
    # (build-release.sh compares with the name files.txt gives the binary.)
    code = code.replace('[ "$src" = target/release/irsa-agent ]', "")
    literal = re.findall(r"(?<![\w$])target/(?:debug|release)\b", code)
    assert literal == [], f"{script} looks in ./target: {literal}"

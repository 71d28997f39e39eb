"""The Ansible route: ansible-core (from PyPI, tests/python/requirements.txt)
runs packaging/ansible/example-playbook.yml against localhost
(ansible_connection=local) on a copy of a fixture node, through the role and
its module, with `--root` and `--no-restart` (no apiserver can run here).

Proves: the first run reports changed=1 and writes the new issuer first, the
second reports changed=0 and writes nothing, check mode changes no byte and
shows the diff, a bad issuer fails the task with irsa-agent's own message.

The binary is $IRSA_AGENT_BIN (default target/debug/irsa-agent).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("IRSA_AGENT_BIN", REPO / "target" / "debug" / "irsa-agent"))
PLAYBOOK = REPO / "packaging" / "ansible" / "example-playbook.yml"
PLAYBOOK_ISSUER = "https://oidc.example.com/my-cluster"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


def snapshot(root):
    """Every file under root: relative path -> (bytes, mode)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.read_bytes() if p.is_file() and not p.is_symlink() else b"", st.st_mode)
    return out


@pytest.fixture
def node(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(REPO / "tests" / "fixtures" / "kubeadm-default", root, symlinks=True)
    return root


@pytest.fixture
def play(tmp_path, node):
    """Run the example playbook on localhost against `node`; returns
    (exit code, output, recap dict)."""
    assert ANSIBLE_PLAYBOOK.exists(), f"ansible-core is not installed in {sys.prefix}"
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        "[control_plane]\n"
        'localhost ansible_connection=local ansible_python_interpreter="{{ ansible_playbook_python }}"\n'
    )
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nretry_files_enabled = False\n")
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
    )

    def run(*args, **extra_vars):
        variables = {
            "ansible_become": False,  # CI runs as root; sudo may not exist
            "irsa_agent_root": str(node),
            "irsa_agent_no_restart": True,
            "irsa_agent_binary": str(BIN),
        }
        variables.update(extra_vars)
        vars_file = tmp_path / "vars.json"
        vars_file.write_text(json.dumps(variables))
        proc = subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(PLAYBOOK), "-e", f"@{vars_file}", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=PLAYBOOK.parent,
            timeout=300,
        )
        output = proc.stdout + proc.stderr
        m = re.search(r"^localhost\s*:\s*(.*)$", proc.stdout, re.M)
        assert m, f"no PLAY RECAP for localhost:\n{output}"
        recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}
        return proc.returncode, output, recap

    return run


def manifest_issuers(node):
    text = (node / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    return re.findall(r"--service-account-issuer=(\S+)", text)


def test_first_run_changes_the_second_reports_ok_and_writes_nothing(play, node):
    before = manifest_issuers(node)
    assert before and PLAYBOOK_ISSUER not in before

    rc, out, recap = play()
    assert rc == 0, out
    assert recap["changed"] == 1 and recap["failed"] == 0, out
    assert manifest_issuers(node) == [PLAYBOOK_ISSUER] + before, "the new issuer signs, the old stays accepted"

    after_first = snapshot(node)
    rc, out, recap = play()
    assert rc == 0, out
    assert recap["changed"] == 0 and recap["failed"] == 0, out
    assert snapshot(node) == after_first, "a converged node was written to"


def test_check_mode_changes_no_byte_and_shows_the_diff(play, node):
    before = snapshot(node)
    rc, out, recap = play("--check", "--diff")
    assert rc == 0, out
    assert recap["changed"] == 1, "check mode says it would change"
    assert snapshot(node) == before, "check mode wrote something"
    assert "+++ b/etc/kubernetes/manifests/kube-apiserver.yaml" in out, out
    assert f"+    - --service-account-issuer={PLAYBOOK_ISSUER}" in out, out


def test_a_bad_issuer_fails_the_task_with_irsa_agents_message(play, node):
    before = snapshot(node)
    rc, out, recap = play(irsa_agent_issuer="http://oidc.example.com/plain-http")
    assert rc != 0
    assert recap["failed"] == 1 and recap["changed"] == 0, out
    # irsa-agent's own message, as the task's msg.
    m = re.search(r'fatal: \[localhost\]: FAILED! => (\{.*\})', out)
    assert m, out
    result = json.loads(m.group(1))
    assert result["msg"].startswith('--issuer: issuer "http://oidc.example.com/plain-http" must use https://'), result
    assert result["rc"] == 1 and result["rolled_back"] is False
    assert snapshot(node) == before


def test_an_unreadable_config_file_fails_naming_its_line(play, node, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"issuer: {PLAYBOOK_ISSUER}\nissuers: [typo]\n")
    rc, out, recap = play(irsa_agent_config=str(config))
    assert recap["failed"] == 1, out
    assert "config.yaml, line 2: unknown field `issuers`" in out, out

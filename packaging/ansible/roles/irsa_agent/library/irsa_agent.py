#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: irsa-agent contributors
# SPDX-License-Identifier: Apache-2.0
"""Ansible module: run `irsa-agent apply --output json` and report its result."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: irsa_agent
short_description: Converge a Kubernetes control-plane node to a public service-account issuer
description:
  - Runs C(irsa-agent apply --output json) on the node. irsa-agent detects the
    distribution (MicroK8s, kubeadm, minikube, k3s, RKE2, k0s), rewrites the
    kube-apiserver service-account flags (new issuer first, every old issuer,
    key file and audience kept), installs keys, restarts the apiserver,
    verifies a fresh token and rolls back by itself if anything fails.
  - Idempotent; a second run with the same options reports C(changed=false).
  - In check mode runs C(apply --check), which changes nothing.
  - In diff mode returns the unified diff of every file that changes (private
    keys are never shown).
  - Options left out fall back to the config file (C(config), default
    C(/etc/irsa-agent/config.yaml) when it exists), then to irsa-agent's defaults.
options:
  issuer:
    description: The issuer URL new tokens are signed with (https, no query, no port).
    type: str
  audiences:
    description: Audiences tokens may be issued for; added to those already accepted. Default C([sts.amazonaws.com]).
    type: list
    elements: str
  signing_key:
    description: A private key (PEM) on the node to install and sign with. Without it (and without I(generate_key)) the cluster keeps its signing key.
    type: path
  generate_key:
    description: Generate a signing key pair in the distribution's key directory (reused on later runs).
    type: bool
    default: false
  key_type:
    description: Key type for I(generate_key).
    type: str
    choices: [rsa-2048, rsa-4096, ec-p256]
  public_keys:
    description: Extra public key files on the node to accept tokens from.
    type: list
    elements: path
  service_account:
    description: The service account (NAMESPACE/NAME) whose fresh token proves the change.
    type: str
  timeout:
    description: Seconds for the whole run's waits (a rollback gets as long again).
    type: int
  no_restart:
    description: Only write the files; the result says C(restart_pending).
    type: bool
    default: false
  allow_port:
    description: Accept an issuer URL with a port (AWS rejects them).
    type: bool
    default: false
  config:
    description: The config file holding the desired state (C(apply --config)).
    type: path
  root:
    description: Operate on a sysroot instead of C(/) (tests, dry runs).
    type: path
  distro:
    description: Skip detection and treat the node as this distribution.
    type: str
  binary:
    description: The irsa-agent executable. Default C(irsa-agent) from C(PATH), C(/usr/bin) or C(/usr/local/bin).
    type: path
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
notes:
  - Exit codes of irsa-agent are returned as C(rc); 3 means it failed after
    writing and rolled back (C(rolled_back=true)), 4 that the rollback did not
    bring the apiserver back.
"""

EXAMPLES = r"""
- name: Public service-account issuer for IRSA
  irsa_agent:
    issuer: https://oidc.example.com/my-cluster
    audiences: [sts.amazonaws.com]
"""

RETURN = r"""
files:
  description: The files changed (or that would change), with C(path), C(action) and C(diff).
  returned: always
  type: list
issuers:
  description: The target issuers, the first one signs.
  returned: success
  type: list
verified:
  description: The decoded claims of the fresh token (null with C(no_restart) or in check mode).
  returned: success
  type: dict
restart_pending:
  description: Files were written with C(no_restart); restart the apiserver.
  returned: success
  type: bool
rolled_back:
  description: A step after the write failed and the old files were put back.
  returned: always
  type: bool
rc:
  description: irsa-agent's exit code.
  returned: always
  type: int
"""

import json

from ansible.module_utils.basic import AnsibleModule


def build_argv(binary, params, check_mode):
    """The irsa-agent command line for these module parameters."""
    argv = [binary, "--output", "json"]
    if params.get("root"):
        argv += ["--root", params["root"]]
    if params.get("distro"):
        argv += ["--distro", params["distro"]]
    argv.append("apply")
    for key, flag in (
        ("issuer", "--issuer"),
        ("config", "--config"),
        ("signing_key", "--signing-key"),
        ("key_type", "--key-type"),
        ("service_account", "--service-account"),
    ):
        if params.get(key):
            argv += [flag, params[key]]
    if params.get("timeout") is not None:
        argv += ["--timeout", str(params["timeout"])]
    for audience in params.get("audiences") or []:
        argv += ["--audience", audience]
    for key in params.get("public_keys") or []:
        argv += ["--public-key", key]
    for key, flag in (
        ("generate_key", "--generate-key"),
        ("no_restart", "--no-restart"),
        ("allow_port", "--allow-port"),
    ):
        if params.get(key):
            argv.append(flag)
    if check_mode:
        argv.append("--check")
    return argv


def main():
    module = AnsibleModule(
        argument_spec=dict(
            issuer=dict(type="str"),
            audiences=dict(type="list", elements="str"),
            signing_key=dict(type="path"),
            generate_key=dict(type="bool", default=False),
            key_type=dict(type="str", choices=["rsa-2048", "rsa-4096", "ec-p256"]),
            public_keys=dict(type="list", elements="path"),
            service_account=dict(type="str"),
            timeout=dict(type="int"),
            no_restart=dict(type="bool", default=False),
            allow_port=dict(type="bool", default=False),
            config=dict(type="path"),
            root=dict(type="path"),
            distro=dict(type="str"),
            binary=dict(type="path"),
        ),
        mutually_exclusive=[("signing_key", "generate_key")],
        supports_check_mode=True,
    )
    params = module.params
    if params["key_type"] and not params["generate_key"]:
        module.fail_json(msg="key_type is only used with generate_key: true")
    binary = params["binary"] or module.get_bin_path(
        "irsa-agent", required=True, opt_dirs=["/usr/bin", "/usr/local/bin"]
    )
    argv = build_argv(binary, params, module.check_mode)
    rc, stdout, stderr = module.run_command(argv)
    try:
        result = json.loads(stdout)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        # No JSON: irsa-agent refused its command line (exit 2) or crashed.
        module.fail_json(
            msg="irsa-agent (exit %d): %s" % (rc, (stderr or stdout).strip()),
            rc=rc,
            cmd=argv,
            stdout=stdout,
            stderr=stderr,
        )
    result["rc"] = rc
    # Ansible shows these as [WARNING] lines.
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    if rc != 0 or "error" in result:
        msg = result.pop("error", None) or stderr.strip() or "irsa-agent failed with exit code %d" % rc
        result.setdefault("changed", False)
        module.fail_json(msg=msg, **result)
    if module._diff:
        result["diff"] = [
            {"before_header": f["path"], "after_header": f["path"], "prepared": f["diff"]}
            for f in result.get("files", [])
        ]
    result["changed"] = bool(result.get("changed"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()

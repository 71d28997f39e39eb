//! A static-pod manifest (kubeadm, minikube): the kube-apiserver container's
//! `command:` (and `args:`) list. The YAML is parsed to find the container; the
//! list items are then edited line by line so every other byte stays.

use anyhow::{anyhow, bail, Context, Result};
use serde_norway::Value;

use super::lines::{self, Item, Token};
use super::yaml_lines::{block_sequences, Block, ListItemRender};
use crate::flags::{Arg, SaState, Source};

const CONTAINER: &str = "kube-apiserver";

/// The kube-apiserver container's arguments, with the text lines they stand on.
fn tokens(path: &str, text: &str) -> Result<Vec<Token>> {
    let doc: Value = super::yaml_lines::parse(path, text)?;
    let named = doc
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_sequence)
        .map(|cs| {
            cs.iter()
                .filter(|c| c.get("name").and_then(Value::as_str) == Some(CONTAINER))
                .count()
        })
        .unwrap_or(0);
    if named > 1 {
        bail!(
            "{path}: {named} containers are named {CONTAINER}; the kubelet refuses a pod whose \
             container names repeat, and irsa-agent cannot tell which one to edit"
        );
    }
    let (command, args) = apiserver_lists(&doc).ok_or_else(|| {
        anyhow!("{path}: no container named kube-apiserver with a command or args list under spec.containers")
    })?;
    let blocks = block_sequences(text, &["command", "args"]);
    let mut out = Vec::new();
    for (key, want) in [("command", command), ("args", args)] {
        let Some(want) = want else { continue };
        let found: Vec<&Block> = blocks
            .iter()
            .filter(|b| {
                b.key == key
                    && b.items
                        .iter()
                        .map(|t| t.text.as_str())
                        .eq(want.iter().map(String::as_str))
            })
            .collect();
        match found.as_slice() {
            [one] => out.extend(one.items.iter().cloned()),
            [] => bail!(
                "{path}: cannot find the kube-apiserver {key} list as a block sequence (one `- item` per line); \
                 flow style or multi-line items are not edited in place"
            ),
            _ => bail!("{path}: the kube-apiserver {key} list appears more than once; cannot tell which to edit"),
        }
    }
    Ok(out)
}

/// `spec.containers[name=kube-apiserver]` command and args as strings.
/// A container's `command` and `args`, each absent or a list of strings.
type CommandAndArgs = (Option<Vec<String>>, Option<Vec<String>>);

fn apiserver_lists(doc: &Value) -> Option<CommandAndArgs> {
    let containers = doc.get("spec")?.get("containers")?.as_sequence()?;
    let c = containers
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(CONTAINER))?;
    let list = |k: &str| {
        c.get(k).and_then(Value::as_sequence).map(|s| {
            s.iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim_end()
                        .to_string(),
                })
                .collect::<Vec<_>>()
        })
    };
    let (command, args) = (list("command"), list("args"));
    (command.is_some() || args.is_some()).then_some((command, args))
}

/// The flag items of the kube-apiserver container, with the lines they stand on.
pub fn items(path: &str, text: &str) -> Result<Vec<Item>> {
    lines::items_from_tokens(&tokens(path, text)?).map_err(|e| anyhow!("{path}: {e}"))
}

/// The apiserver arguments the manifest yields.
pub fn read(path: &str, text: &str) -> Result<Vec<Arg>> {
    let items = items(path, text)?;
    Ok(items
        .into_iter()
        .map(|it| Arg::new(it.name, it.value, Source::line(path, it.line + 1)))
        .collect())
}

/// Rewrite the manifest so that its managed flags are exactly `target`.
pub fn edit(path: &str, text: &str, target: &SaState) -> Result<String> {
    let tokens = tokens(path, text)?;
    let mut items = lines::items_from_tokens(&tokens).map_err(|e| anyhow!("{path}: {e}"))?;
    if items.is_empty() {
        // No flag yet (only the binary): new flags go after the last item,
        // written like it. An item with no name is never edited itself.
        if let Some(last) = tokens.last() {
            items.push(Item {
                name: String::new(),
                value: last.text.clone(),
                line: last.line,
                last_line: last.line,
                prefix: last.prefix.clone(),
                suffix: last.suffix.clone(),
                shared_line: false,
            });
        }
    }
    let edits = lines::plan(&items, target);
    let out = lines::apply(
        text,
        &items,
        &edits,
        &ListItemRender {
            list: "the kube-apiserver command list",
        },
    )
    .with_context(|| format!("editing {path}"))?;
    // Only the container's command/args may differ: checked on the parsed documents.
    if out != text && outside_apiserver_lists(text)? != outside_apiserver_lists(&out)? {
        bail!(
            "{path}: editing the kube-apiserver command list line by line would change other \
             parts of the manifest; nothing was written"
        );
    }
    Ok(out)
}

/// The manifest without the kube-apiserver container's command and args.
fn outside_apiserver_lists(text: &str) -> Result<Value> {
    let mut doc: Value = serde_norway::from_str(text)?;
    if let Some(cs) = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("containers"))
        .and_then(Value::as_sequence_mut)
    {
        for c in cs {
            if c.get("name").and_then(Value::as_str) == Some(CONTAINER) {
                if let Some(m) = c.as_mapping_mut() {
                    m.remove("command");
                    m.remove("args");
                }
            }
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: sidecar\n    command:\n    - sleep\n  - command:\n    - kube-apiserver\n    - --advertise-address=10.0.0.1  # node ip\n    - \"--service-account-issuer=https://kubernetes.default.svc.cluster.local\"\n    - --service-account-key-file\n    - /etc/kubernetes/pki/sa.pub\n    - '--service-account-signing-key-file=/etc/kubernetes/pki/sa.key'\n    image: registry.k8s.io/kube-apiserver:v1.31.0\n    name: kube-apiserver\n";

    #[test]
    fn reads_the_apiserver_container_only() {
        let args = read("/m.yaml", MANIFEST).unwrap();
        let got: Vec<_> = args
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str(), a.source.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("advertise-address", "10.0.0.1", "/m.yaml:10".to_string()),
                (
                    "service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                    "/m.yaml:11".into()
                ),
                (
                    "service-account-key-file",
                    "/etc/kubernetes/pki/sa.pub",
                    "/m.yaml:12".into()
                ),
                (
                    "service-account-signing-key-file",
                    "/etc/kubernetes/pki/sa.key",
                    "/m.yaml:14".into()
                ),
            ]
        );
    }

    #[test]
    fn edits_keep_quoting_and_everything_else() {
        let target = crate::flags::sample_kubeadm_target();
        let out = edit("/m.yaml", MANIFEST, &target).unwrap();
        let want = MANIFEST
            .replace(
                "    - \"--service-account-issuer=https://kubernetes.default.svc.cluster.local\"\n",
                "    - \"--service-account-issuer=https://oidc.example.com\"\n    - \"--service-account-issuer=https://kubernetes.default.svc.cluster.local\"\n    - \"--api-audiences=https://kubernetes.default.svc.cluster.local,sts.amazonaws.com\"\n",
            )
            .replace(
                "    - /etc/kubernetes/pki/sa.pub\n",
                "    - /etc/kubernetes/pki/sa.pub\n    - --service-account-key-file=/etc/kubernetes/pki/new.pub\n",
            )
            .replace("sa.key'", "new.key'");
        assert_eq!(out, want);
        let again = edit("/m.yaml", &out, &target).unwrap();
        assert_eq!(again, out, "idempotent");
    }

    #[test]
    fn invalid_yaml_names_the_file_and_line() {
        let err = read("/m.yaml", "spec: [\n").unwrap_err();
        let chain = format!("{err:#}");
        assert!(chain.contains("/m.yaml is not valid YAML"), "{chain}");
        assert!(chain.contains("line"), "{chain}");
    }

    #[test]
    fn flow_style_is_refused() {
        let text = "spec:\n  containers:\n  - name: kube-apiserver\n    command: [kube-apiserver, --a=b]\n";
        let err = read("/m.yaml", text).unwrap_err().to_string();
        assert!(err.contains("block sequence"), "{err}");
    }
}

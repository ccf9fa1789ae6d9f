"""deploy/terraform/: every file parses, and every grant is exactly what the broker calls.

terraform is not run here. Each .tf file is parsed with python-hcl2 and the policy documents
are read from the parsed blocks: the IAM trust policy, the broker role's policies and the KMS
key policies (AWS), and the IAM members and custom role (GCP). A wildcard action or resource,
a grant on anything but the module's own keys, or an action the broker does not call fails.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "deploy" / "terraform"
MODULES = ("aws", "gcp", "examples")
SIDECAR = ROOT / "deploy" / "kubernetes" / "keybroker-sidecar.yaml"
_OPTIONS = hcl2.SerializationOptions(
    strip_string_quotes=True, with_comments=False, explicit_blocks=False
)

# The KMS calls broker/kms/aws makes on each kind of key (health's ListKeys: README.md).
ENVELOPE_ACTIONS = {"kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"}
SIGNING_ACTIONS = {"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"}
KEY_ACTIONS = {"envelope": ENVELOPE_ACTIONS, "signing": SIGNING_ACTIONS}
ACCOUNT_ROOT = (
    "arn:${data.aws_partition.current.partition}:iam::"
    "${data.aws_caller_identity.current.account_id}:root"
)
BROKER_ROLE = "${aws_iam_role.broker.arn}"
GCP_MEMBER = "serviceAccount:${google_service_account.broker.email}"
GCP_ROLES = {
    "roles/cloudkms.cryptoKeyEncrypterDecrypter",
    "${google_project_iam_custom_role.key_reader[0].id}",
}
GCP_READER_PERMISSIONS = {"cloudkms.cryptoKeys.get", "cloudkms.cryptoKeyVersions.list"}
_NEGATED = ("not_actions", "not_resources", "not_principals")


def _tf_files() -> list[Path]:
    """Every .tf file under deploy/terraform/."""
    return sorted(TERRAFORM.rglob("*.tf"))


@cache
def _parse(path: Path) -> dict[str, Any]:
    """One file, parsed with string quotes stripped and blocks as plain dicts."""
    with path.open(encoding="utf-8") as f:
        parsed: dict[str, Any] = hcl2.load(f, serialization_options=_OPTIONS)
    return parsed


def _blocks(module: str, kind: str) -> dict[str, Any]:
    """Top-level blocks of one kind (variable, output, locals, module) of a module, by name."""
    found: dict[str, Any] = {}
    for path in sorted((TERRAFORM / module).glob("*.tf")):
        for block in _parse(path).get(kind, []):
            found.update(block)
    return found


def _typed(module: str, kind: str, type_name: str) -> dict[str, dict[str, Any]]:
    """Resources or data sources of one type in a module, by name."""
    return {
        name: body
        for path in sorted((TERRAFORM / module).glob("*.tf"))
        for block in _parse(path).get(kind, [])
        for name, body in block.get(type_name, {}).items()
    }


def _documents() -> dict[str, list[dict[str, Any]]]:
    """The statements of every aws_iam_policy_document in the AWS module, by document name."""
    docs = _typed("aws", "data", "aws_iam_policy_document")
    return {name: body["statement"] for name, body in docs.items()}


def _document_of(reference: str) -> str:
    """The name of the policy document a `policy = data....json` reference reads."""
    match = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)(\[0\])?\.json\}", reference)
    assert match, f"policy is not an aws_iam_policy_document: {reference}"
    return match.group(1)


def _consumers() -> dict[str, tuple[str, str]]:
    """Each policy document -> (what uses it: trust, key or role policy, the user's name)."""
    uses = [
        ("trust", "aws_iam_role", "assume_role_policy"),
        ("key", "aws_kms_key", "policy"),
        ("role", "aws_iam_role_policy", "policy"),
    ]
    found: dict[str, tuple[str, str]] = {}
    for use, type_name, field in uses:
        for name, body in _typed("aws", "resource", type_name).items():
            doc = _document_of(body[field])
            assert doc not in found, f"policy document {doc} is used twice"
            found[doc] = (use, name)
    return found


def _wildcards(statement: dict[str, Any]) -> list[str]:
    """The actions and resources of a statement that hold a `*`."""
    values = [*statement.get("actions", []), *statement.get("resources", [])]
    return [v for v in values if "*" in v]


def _is_root_administration(statement: dict[str, Any]) -> bool:
    """The one statement allowed `kms:*`: the account root administering its own key."""
    return (
        statement.get("principals") == [{"type": "AWS", "identifiers": [ACCOUNT_ROOT]}]
        and statement.get("actions") == ["kms:*"]
        and statement.get("resources") == ["*"]
    )


def _key_name(resource: str) -> str:
    """`aws_kms_key.signing[0].arn` -> signing."""
    match = re.fullmatch(r"\$\{aws_kms_key\.(\w+)(\[0\])?\.arn\}", resource)
    assert match, f"the broker's role is granted something other than its own keys: {resource}"
    return match.group(1)


def _references(module: str, prefix: str) -> set[str]:
    """Names referenced as `prefix.NAME` anywhere in a module's parsed files."""
    text = json.dumps([_parse(p) for p in sorted((TERRAFORM / module).glob("*.tf"))])
    return set(re.findall(rf"\b{re.escape(prefix)}\.([A-Za-z_][\w-]*)", text))


def _readme_table(module: str, heading: str) -> set[str]:
    """The first-column names of the table under `## heading` in a module's README.md."""
    text = (TERRAFORM / module / "README.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([\w-]+)` \|", section, flags=re.MULTILINE))


class TestFiles:
    """Each module is there, and every file of it is HCL that parses."""

    def test_modules_have_their_files(self) -> None:
        """A module without its variables, resources, outputs or providers is incomplete."""
        for module in MODULES:
            names = {p.name for p in (TERRAFORM / module).glob("*.tf")}
            assert names == {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}, module

    @pytest.mark.parametrize("path", _tf_files(), ids=lambda p: str(p.relative_to(TERRAFORM)))
    def test_file_parses(self, path: Path) -> None:
        """A syntax error would stop `terraform init` before anything is checked."""
        assert _parse(path), f"{path} holds no blocks"


class TestAwsPolicies:
    """The key policies, the broker role's policies and the IRSA trust policy."""

    def test_every_document_is_checked(self) -> None:
        """A document no trust, key or role policy uses would escape every check below."""
        assert set(_consumers()) == set(_documents())
        assert {use for use, _ in _consumers().values()} == {"trust", "key", "role"}

    def test_no_wildcard_but_root_administration(self) -> None:
        """`*` in an action or resource grants more than the broker calls."""
        consumers = _consumers()
        for doc, statements in _documents().items():
            for statement in statements:
                assert not set(_NEGATED) & set(statement), f"{doc}: a Not* element"
                if consumers[doc][0] == "key" and _is_root_administration(statement):
                    continue
                if consumers[doc][0] == "key":
                    assert statement.get("resources") == ["*"], f"{doc}: a key policy's resource"
                    assert not [a for a in statement["actions"] if "*" in a], doc
                    continue
                assert _wildcards(statement) == [], f"{doc}: {_wildcards(statement)}"

    def test_key_policies_grant_the_broker_its_calls(self) -> None:
        """Each key policy: root administration, and the broker role with exactly its calls."""
        for doc, (use, key) in _consumers().items():
            if use != "key":
                continue
            root, broker = _documents()[doc]
            assert _is_root_administration(root), doc
            assert broker["principals"] == [{"type": "AWS", "identifiers": [BROKER_ROLE]}], doc
            assert broker.get("effect") == "Allow", doc
            assert set(broker["actions"]) == KEY_ACTIONS[key], doc

    def test_role_policies_grant_exactly_the_calls_on_the_keys(self) -> None:
        """The broker's role: the actions it calls, on its own key ARNs only."""
        granted: dict[str, set[str]] = {}
        for doc, (use, name) in _consumers().items():
            if use != "role":
                continue
            role = _typed("aws", "resource", "aws_iam_role_policy")[name]["role"]
            assert role == "${aws_iam_role.broker.id}", name
            for statement in _documents()[doc]:
                assert statement.get("effect") == "Allow", doc
                assert "principals" not in statement, doc
                for resource in statement["resources"]:
                    granted.setdefault(_key_name(resource), set()).update(statement["actions"])
        assert granted == KEY_ACTIONS

    def test_trust_admits_one_service_account(self) -> None:
        """Only the broker's service account, with the STS audience, may assume the role."""
        trusts = [d for d, (use, _) in _consumers().items() if use == "trust"]
        assert len(trusts) == 1
        (statement,) = _documents()[trusts[0]]
        assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]
        assert statement["principals"] == [
            {"type": "Federated", "identifiers": ["${var.oidc_provider_arn}"]}
        ]
        conditions = {c["variable"]: (c["test"], c["values"]) for c in statement["condition"]}
        assert conditions == {
            "${local.oidc_issuer}:sub": (
                "StringEquals",
                ["system:serviceaccount:${var.namespace}:${var.service_account}"],
            ),
            "${local.oidc_issuer}:aud": ("StringEquals", ["sts.amazonaws.com"]),
        }

    def test_keys_rotate_and_signing_key_is_p384(self) -> None:
        """The envelope key rotates; the signing key is the P-384 key the broker signs with."""
        keys = _typed("aws", "resource", "aws_kms_key")
        assert keys["envelope"]["enable_key_rotation"] is True
        assert keys["envelope"]["key_usage"] == "ENCRYPT_DECRYPT"
        assert keys["signing"]["key_usage"] == "SIGN_VERIFY"
        assert keys["signing"]["customer_master_key_spec"] == "ECC_NIST_P384"


class TestGcpGrants:
    """The broker's service account gets its roles on the crypto key and nowhere else."""

    def test_only_key_level_grants(self) -> None:
        """Any IAM resource but the key's members and the Workload Identity binding is refused."""
        types = {
            type_name
            for path in sorted((TERRAFORM / "gcp").glob("*.tf"))
            for block in _parse(path).get("resource", [])
            for type_name in block
        }
        iam = {t for t in types if "_iam_" in t}
        assert iam == {
            "google_kms_crypto_key_iam_member",
            "google_project_iam_custom_role",
            "google_service_account_iam_member",
        }

    def test_key_members_have_exactly_the_roles(self) -> None:
        """Each member: the broker's account, on the crypto key, with one of the two roles."""
        members = _typed("gcp", "resource", "google_kms_crypto_key_iam_member").values()
        for member in members:
            assert member["crypto_key_id"] == "${google_kms_crypto_key.broker.id}"
            assert member["member"] == GCP_MEMBER
        assert {m["role"] for m in members} == GCP_ROLES

    def test_reader_role_holds_the_two_reads(self) -> None:
        """GetCryptoKey (health) and ListCryptoKeyVersions (describe), nothing more."""
        (role,) = _typed("gcp", "resource", "google_project_iam_custom_role").values()
        assert set(role["permissions"]) == GCP_READER_PERMISSIONS
        assert not [p for p in role["permissions"] if "*" in p]

    def test_workload_identity_admits_one_service_account(self) -> None:
        """The binding names one namespace/service-account pair on the broker's account."""
        (binding,) = _typed("gcp", "resource", "google_service_account_iam_member").values()
        assert binding["service_account_id"] == "${google_service_account.broker.name}"
        assert binding["role"] == "roles/iam.workloadIdentityUser"
        assert binding["member"] == (
            "serviceAccount:${local.workload_identity_pool}"
            "[${var.kubernetes_namespace}/${var.kubernetes_service_account}]"
        )

    def test_key_rotates(self) -> None:
        """The key is a symmetric encryption key with a rotation period."""
        (key,) = _typed("gcp", "resource", "google_kms_crypto_key").values()
        assert key["purpose"] == "ENCRYPT_DECRYPT"
        assert key["rotation_period"] == "${var.rotation_period}"


class TestInterfaces:
    """Variables, locals, outputs and READMEs agree with each other and with the manifests."""

    @pytest.mark.parametrize("module", MODULES)
    def test_references_are_declared(self, module: str) -> None:
        """`var.X` and `local.X` name something declared; every variable is used."""
        declared = set(_blocks(module, "variable"))
        assert _references(module, "var") == declared
        assert _references(module, "local") <= set(_blocks(module, "locals"))

    def test_example_uses_the_modules_as_declared(self) -> None:
        """The example sets every required input, no unknown one, and reads real outputs."""
        used = _references("examples", "module")
        for name, call in _blocks("examples", "module").items():
            module = call["source"].removeprefix("../")
            variables = _blocks(module, "variable")
            required = {v for v, body in variables.items() if "default" not in body}
            inputs = set(call) - {"source"}
            assert required <= inputs <= set(variables), name
            assert name in used
        text = json.dumps([_parse(p) for p in sorted((TERRAFORM / "examples").glob("*.tf"))])
        for module, output in re.findall(r"\bmodule\.(\w+)\.(\w+)", text):
            assert output in _blocks(module, "output"), f"module.{module}.{output}"

    @pytest.mark.parametrize("module", ["aws", "gcp"])
    def test_readme_documents_the_interface(self, module: str) -> None:
        """The README's Inputs and Outputs tables list exactly the module's."""
        assert _readme_table(module, "Inputs") == set(_blocks(module, "variable"))
        assert _readme_table(module, "Outputs") == set(_blocks(module, "output"))

    def test_example_matches_the_sidecar_manifest(self) -> None:
        """The example's role and service account are the ones keybroker-sidecar.yaml names."""
        docs = list(yaml.safe_load_all(SIDECAR.read_text(encoding="utf-8")))
        (account,) = [d for d in docs if d and d["kind"] == "ServiceAccount"]
        role_arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        aws = _blocks("examples", "module")["aws"]
        role_name = _typed("aws", "resource", "aws_iam_role")["broker"]["name"]
        assert role_arn.endswith(":role/" + role_name.replace("${var.name}", aws["name"]))
        assert aws["service_account"] == account["metadata"]["name"]
        assert aws["namespace"] == account["metadata"].get("namespace", "default")

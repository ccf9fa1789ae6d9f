# A KMS key for keybroker's envelope encryption (and, optionally, one for signing) and the IAM
# role the broker assumes through IRSA. The broker's grants are exactly the KMS calls
# broker/kms/aws makes; see README.md for the one it cannot be granted here (health ListKeys).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  # IAM condition keys name the issuer without its scheme.
  oidc_issuer = trimprefix(var.oidc_provider_url, "https://")
}

# --- The role the broker's service account assumes -------------------------------------------

data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "KeybrokerServiceAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${var.service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "broker" {
  name               = "${var.name}-keybroker"
  description        = "keybroker for ${var.namespace}/${var.service_account}: KMS calls on its own keys only"
  assume_role_policy = data.aws_iam_policy_document.trust.json
  tags               = var.tags
}

# --- Envelope key: wraps DEKs and the key store's root key -----------------------------------

# Account-root administration keeps the key manageable through IAM (without it a key whose
# policy names no administrator can never be changed again). The broker's statement repeats its
# role policy so the key still serves the broker if someone narrows the account's IAM grants.
data "aws_iam_policy_document" "envelope_key" {
  statement {
    sid       = "AccountRootAdministers"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "KeybrokerEnvelope"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
    resources = ["*"] # in a key policy "*" is this key and nothing else

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.broker.arn]
    }
  }
}

resource "aws_kms_key" "envelope" {
  description              = "keybroker ${var.name}: envelope encryption"
  key_usage                = "ENCRYPT_DECRYPT"
  customer_master_key_spec = "SYMMETRIC_DEFAULT"
  enable_key_rotation      = true
  rotation_period_in_days  = var.rotation_period_in_days
  deletion_window_in_days  = var.deletion_window_in_days
  policy                   = data.aws_iam_policy_document.envelope_key.json
  tags                     = var.tags
}

resource "aws_kms_alias" "envelope" {
  name          = "alias/keybroker-${var.name}"
  target_key_id = aws_kms_key.envelope.key_id
}

data "aws_iam_policy_document" "broker_envelope" {
  statement {
    sid       = "EnvelopeEncryption"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"]
    resources = [aws_kms_key.envelope.arn]
  }
}

resource "aws_iam_role_policy" "envelope" {
  name   = "keybroker-envelope"
  role   = aws_iam_role.broker.id
  policy = data.aws_iam_policy_document.broker_envelope.json
}

# --- Optional signing key: the private key never leaves KMS ----------------------------------

# The broker signs with kms:Sign and reads the public key once with kms:GetPublicKey; it
# verifies locally with that public key, so kms:Verify is not granted.
data "aws_iam_policy_document" "signing_key" {
  count = var.signing_key ? 1 : 0

  statement {
    sid       = "AccountRootAdministers"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "KeybrokerSigning"
    effect    = "Allow"
    actions   = ["kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"]
    resources = ["*"] # in a key policy "*" is this key and nothing else

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.broker.arn]
    }
  }
}

# Asymmetric KMS keys cannot rotate: a new signing key is a new key (and a new key URI).
resource "aws_kms_key" "signing" {
  count = var.signing_key ? 1 : 0

  description              = "keybroker ${var.name}: ECDSA P-384 signing"
  key_usage                = "SIGN_VERIFY"
  customer_master_key_spec = "ECC_NIST_P384"
  enable_key_rotation      = false
  deletion_window_in_days  = var.deletion_window_in_days
  policy                   = data.aws_iam_policy_document.signing_key[0].json
  tags                     = var.tags
}

resource "aws_kms_alias" "signing" {
  count = var.signing_key ? 1 : 0

  name          = "alias/keybroker-${var.name}-signing"
  target_key_id = aws_kms_key.signing[0].key_id
}

data "aws_iam_policy_document" "broker_signing" {
  count = var.signing_key ? 1 : 0

  statement {
    sid       = "DelegatedSigning"
    effect    = "Allow"
    actions   = ["kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"]
    resources = [aws_kms_key.signing[0].arn]
  }
}

resource "aws_iam_role_policy" "signing" {
  count = var.signing_key ? 1 : 0

  name   = "keybroker-signing"
  role   = aws_iam_role.broker.id
  policy = data.aws_iam_policy_document.broker_signing[0].json
}

output "key_arn" {
  description = "ARN of the envelope key."
  value       = aws_kms_key.envelope.arn
}

output "key_uri" {
  description = "keybroker URI of the envelope key, for [keys.NAME] uri or [keyring] master_key_uri."
  value       = "aws-kms://${aws_kms_key.envelope.arn}"
}

output "alias_name" {
  description = "Alias of the envelope key (alias/keybroker-<name>)."
  value       = aws_kms_alias.envelope.name
}

output "signing_key_arn" {
  description = "ARN of the signing key; null unless signing_key is true."
  value       = var.signing_key ? aws_kms_key.signing[0].arn : null
}

output "signing_key_uri" {
  description = "keybroker URI of the signing key, for a [keys.NAME] with purpose = \"signing\"; null unless signing_key is true."
  value       = var.signing_key ? "aws-kms://${aws_kms_key.signing[0].arn}" : null
}

output "role_arn" {
  description = "ARN of the broker's role: the service account's eks.amazonaws.com/role-arn annotation."
  value       = aws_iam_role.broker.arn
}

output "role_name" {
  description = "Name of the broker's role (<name>-keybroker)."
  value       = aws_iam_role.broker.name
}

output "service_account_annotations" {
  description = "Annotations for the broker's Kubernetes service account."
  value       = { "eks.amazonaws.com/role-arn" = aws_iam_role.broker.arn }
}

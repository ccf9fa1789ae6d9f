output "aws_service_account_annotations" {
  description = "Put on the payments service account in EKS."
  value       = module.aws.service_account_annotations
}

output "gcp_service_account_annotations" {
  description = "Put on the payments service account in GKE."
  value       = module.gcp.service_account_annotations
}

output "keybroker_toml_eks" {
  description = "The keys of keybroker.toml for the broker on EKS."
  value       = <<-EOT
    [keys.payments]
    uri = "${module.aws.key_uri}"

    [keys.payments-signer]
    uri = "${module.aws.signing_key_uri}"
    purpose = "signing"

    [keyring]
    master_key_uri = "${module.aws.key_uri}"
  EOT
}

output "keybroker_toml_gke" {
  description = "The keys of keybroker.toml for the broker on GKE."
  value       = <<-EOT
    [keys.payments]
    uri = "${module.gcp.key_uri}"

    [keyring]
    master_key_uri = "${module.gcp.key_uri}"
  EOT
}

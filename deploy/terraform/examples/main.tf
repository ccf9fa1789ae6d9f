# The payments workload of deploy/kubernetes/keybroker-sidecar.yaml: service account
# default/payments, role payments-keybroker. Its envelope key and a signing key live in AWS KMS;
# a second envelope key, for the same broker running on GKE, lives in Cloud KMS.

module "aws" {
  source = "../aws"

  name              = "payments"
  oidc_provider_arn = var.eks_oidc_provider_arn
  oidc_provider_url = var.eks_oidc_provider_url
  namespace         = "default"
  service_account   = "payments"
  signing_key       = true
  tags              = { workload = "payments" }
}

module "gcp" {
  source = "../gcp"

  project_id                 = var.gcp_project_id
  location                   = var.gcp_location
  key_name                   = "payments"
  service_account_id         = "payments-keybroker"
  kubernetes_namespace       = "default"
  kubernetes_service_account = "payments"
}

variable "aws_region" {
  description = "AWS region of the key and the EKS cluster."
  type        = string
  default     = "eu-west-1"
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider."
  type        = string
}

variable "eks_oidc_provider_url" {
  description = "Issuer URL of the EKS cluster's OIDC provider."
  type        = string
}

variable "gcp_project_id" {
  description = "GCP project of the Cloud KMS key and the broker's service account."
  type        = string
}

variable "gcp_location" {
  description = "Cloud KMS location of the key ring."
  type        = string
  default     = "europe-west1"
}

variable "name" {
  description = "Name of the workload the broker serves (e.g. payments). Names the role <name>-keybroker and the aliases alias/keybroker-<name>[-signing]."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,40}[a-z0-9]$", var.name))
    error_message = "name must be 2 to 42 lower-case letters, digits and dashes, starting and ending with a letter or digit."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (aws_iam_openid_connect_provider.arn, or the EKS module's oidc_provider_arn)."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:iam::[0-9]{12}:oidc-provider/[^*]+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be the ARN of an IAM OIDC provider."
  }
}

variable "oidc_provider_url" {
  description = "Issuer URL of the cluster's OIDC provider, with or without https:// (e.g. oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE)."
  type        = string

  validation {
    condition     = can(regex("^(https://)?[^*/]+(/[^*]+)?$", var.oidc_provider_url))
    error_message = "oidc_provider_url must be the provider's issuer URL, without wildcards."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the broker's service account."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a Kubernetes namespace name (a DNS label)."
  }
}

variable "service_account" {
  description = "Name of the Kubernetes service account the broker runs as (the only one that may assume the role)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.service_account))
    error_message = "service_account must be a Kubernetes service account name (a DNS subdomain)."
  }
}

variable "deletion_window_in_days" {
  description = "Days a scheduled deletion of a key can still be cancelled; every DEK it wraps is lost after that."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "rotation_period_in_days" {
  description = "Days between automatic rotations of the envelope key's material."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 2560
    error_message = "rotation_period_in_days must be between 90 and 2560."
  }
}

variable "signing_key" {
  description = "Also create an ECC_NIST_P384 signing key (keybroker purpose = \"signing\") the broker may sign with."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to the keys and the role."
  type        = map(string)
  default     = {}
}

variable "project_id" {
  description = "Project that holds the key ring, the key and the broker's service account."
  type        = string
}

variable "location" {
  description = "Cloud KMS location of the key ring (a region such as europe-west1, or global)."
  type        = string
}

variable "key_ring_name" {
  description = "Name of the key ring. Key rings cannot be deleted: pick a name you keep."
  type        = string
  default     = "keybroker"
}

variable "key_name" {
  description = "Name of the crypto key (the last part of its gcp-kms:// URI)."
  type        = string
}

variable "rotation_period" {
  description = "Time between automatic rotations of the key, in seconds with an s suffix (at least 86400s)."
  type        = string
  default     = "7776000s" # 90 days

  validation {
    condition     = can(regex("^[0-9]+s$", var.rotation_period)) && tonumber(trimsuffix(var.rotation_period, "s")) >= 86400
    error_message = "rotation_period must be a number of seconds with an s suffix, at least 86400s."
  }
}

variable "protection_level" {
  description = "SOFTWARE or HSM protection of the key's versions."
  type        = string
  default     = "SOFTWARE"

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.protection_level)
    error_message = "protection_level must be SOFTWARE or HSM."
  }
}

variable "service_account_id" {
  description = "account_id of the broker's Google service account (6 to 30 characters)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6 to 30 lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "key_reader" {
  description = "Also let the service account read the key's metadata (cloudkms.cryptoKeys.get, cloudkms.cryptoKeyVersions.list), which the broker's health probe and describe_key call."
  type        = bool
  default     = true
}

variable "key_reader_role_id" {
  description = "role_id of the project custom role that holds the two read permissions (used when key_reader is true)."
  type        = string
  default     = "keybrokerKeyReader"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.key_reader_role_id))
    error_message = "key_reader_role_id must be 3 to 64 letters, digits, underscores and dots."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace of the Kubernetes service account allowed to act as the Google service account (Workload Identity); used when kubernetes_service_account is set."
  type        = string
  default     = "default"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "kubernetes_namespace must be a Kubernetes namespace name (a DNS label)."
  }
}

variable "kubernetes_service_account" {
  description = "Kubernetes service account the broker runs as on GKE; null creates no Workload Identity binding."
  type        = string
  default     = null

  validation {
    condition     = var.kubernetes_service_account == null || can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.kubernetes_service_account))
    error_message = "kubernetes_service_account must be a Kubernetes service account name (a DNS subdomain)."
  }
}

variable "workload_identity_pool" {
  description = "Workload Identity pool of the GKE cluster; null means the project's own, <project_id>.svc.id.goog."
  type        = string
  default     = null
}

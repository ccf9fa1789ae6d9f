# A Cloud KMS key for keybroker's envelope encryption and the service account the broker runs
# as. Every grant is on that one key, never on the key ring or the project.

locals {
  workload_identity_pool = coalesce(var.workload_identity_pool, "${var.project_id}.svc.id.goog")
}

resource "google_kms_key_ring" "broker" {
  project  = var.project_id
  name     = var.key_ring_name
  location = var.location
}

resource "google_kms_crypto_key" "broker" {
  name            = var.key_name
  key_ring        = google_kms_key_ring.broker.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.rotation_period

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = var.protection_level
  }
}

resource "google_service_account" "broker" {
  project      = var.project_id
  account_id   = var.service_account_id
  display_name = "keybroker (${var.key_name})"
  description  = "keybroker: encrypts and decrypts with ${var.key_name} only"
}

# Encrypt wraps DEKs, Decrypt unwraps them: the broker's whole use of the key.
resource "google_kms_crypto_key_iam_member" "encrypter_decrypter" {
  crypto_key_id = google_kms_crypto_key.broker.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_service_account.broker.email}"
}

# The health probe calls GetCryptoKey and describe_key also lists the versions; neither is in
# cryptoKeyEncrypterDecrypter, and roles/cloudkms.viewer holds more than these two reads.
resource "google_project_iam_custom_role" "key_reader" {
  count = var.key_reader ? 1 : 0

  project     = var.project_id
  role_id     = var.key_reader_role_id
  title       = "keybroker key reader"
  description = "Read one Cloud KMS key's metadata and list its versions (keybroker health and describe)"
  permissions = ["cloudkms.cryptoKeys.get", "cloudkms.cryptoKeyVersions.list"]
}

resource "google_kms_crypto_key_iam_member" "key_reader" {
  count = var.key_reader ? 1 : 0

  crypto_key_id = google_kms_crypto_key.broker.id
  role          = google_project_iam_custom_role.key_reader[0].id
  member        = "serviceAccount:${google_service_account.broker.email}"
}

# GKE Workload Identity: the one Kubernetes service account may act as the broker's account.
resource "google_service_account_iam_member" "workload_identity" {
  count = var.kubernetes_service_account == null ? 0 : 1

  service_account_id = google_service_account.broker.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_identity_pool}[${var.kubernetes_namespace}/${var.kubernetes_service_account}]"
}

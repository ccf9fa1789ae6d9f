output "key_id" {
  description = "Resource name of the key: projects/P/locations/L/keyRings/R/cryptoKeys/K (ECL_CRYPTO_KMS_KEY_ID)."
  value       = google_kms_crypto_key.broker.id
}

output "key_uri" {
  description = "keybroker URI of the key, for [keys.NAME] uri or [keyring] master_key_uri."
  value       = "gcp-kms://${google_kms_crypto_key.broker.id}"
}

output "key_ring_id" {
  description = "Resource name of the key ring."
  value       = google_kms_key_ring.broker.id
}

output "service_account_email" {
  description = "Email of the broker's Google service account."
  value       = google_service_account.broker.email
}

output "service_account_annotations" {
  description = "Annotations for the broker's Kubernetes service account (GKE Workload Identity)."
  value       = { "iam.gke.io/gcp-service-account" = google_service_account.broker.email }
}

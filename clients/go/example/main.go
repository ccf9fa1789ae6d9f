// Command example encrypts, decrypts, signs and verifies through a running keybroker daemon.
//
//	keybroker serve --dev &
//	KEYBROKER_SOCKET=$PWD/.keybroker/keybroker.sock go run ./example
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	keybroker "keybroker.dev/client"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	client, err := keybroker.Dial(ctx) // socket from KEYBROKER_SOCKET or the defaults
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// Envelope encryption bound to a tenant: the same context is needed to decrypt.
	acme := keybroker.WithEncryptionContext(map[string]string{"tenant": "acme"})
	envelope, err := client.Encrypt(ctx, []byte("card 4111 1111 1111 1111"), acme)
	if err != nil {
		log.Fatal(err)
	}
	plaintext, err := client.Decrypt(ctx, envelope, acme)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("decrypted: %s\n", plaintext)

	other := keybroker.WithEncryptionContext(map[string]string{"tenant": "globex"})
	if _, err := client.Decrypt(ctx, envelope, other); errors.Is(err, keybroker.ErrDecryption) {
		fmt.Println("wrong tenant rejected")
	} else {
		log.Fatalf("expected ErrDecryption, got %v", err)
	}

	// Signatures: the private key stays in the daemon.
	msg := []byte("invoice 42: EUR 100")
	signature, err := client.Sign(ctx, "signing", msg)
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Verify(ctx, "signing", msg, signature); err != nil {
		log.Fatal(err)
	}
	fmt.Println("signature verified")

	err = client.Verify(ctx, "signing", []byte("invoice 42: EUR 900"), signature)
	var kbErr *keybroker.Error
	if errors.Is(err, keybroker.ErrVerification) && errors.As(err, &kbErr) {
		fmt.Println("tampered message rejected:", kbErr.Reason)
	} else {
		log.Fatalf("expected ErrVerification, got %v", err)
	}
}

package keybroker_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	keybroker "keybroker.dev/client"
)

// socket is the dev daemon's socket: scripts/test-go.sh starts one daemon for the whole run
// with the shared launcher (tests/support/daemon.py) and exports it as KEYBROKER_SOCKET.
var socket = os.Getenv(keybroker.EnvSocket)

// requireDaemon fails the test when no harness started the dev daemon it needs.
func requireDaemon(t *testing.T) {
	t.Helper()
	if socket == "" {
		t.Fatalf("%s is not set: run scripts/test-go.sh, which starts a dev daemon for these tests", keybroker.EnvSocket)
	}
}

// dial connects to the dev daemon.
func dial(t *testing.T) *keybroker.Client {
	t.Helper()
	requireDaemon(t)
	c, err := keybroker.Dial(context.Background(), keybroker.WithSocket(socket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	c, ctx := dial(t), context.Background()
	acme := keybroker.WithEncryptionContext(map[string]string{"tenant": "acme"})
	envelope, err := c.Encrypt(ctx, []byte("secret"), acme)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(envelope, []byte("secret")) {
		t.Fatal("envelope contains the plaintext")
	}
	got, err := c.Decrypt(ctx, envelope, acme)
	if err != nil || string(got) != "secret" {
		t.Fatalf("Decrypt = %q, %v", got, err)
	}

	stored, err := c.Encrypt(ctx, []byte("kept"), keybroker.WithKey("default"), acme, keybroker.WithStoredContext())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Decrypt(ctx, stored); err != nil || string(got) != "kept" {
		t.Fatalf("Decrypt stored context = %q, %v", got, err)
	}
}

func TestDecryptWrongContext(t *testing.T) {
	c, ctx := dial(t), context.Background()
	envelope, err := c.Encrypt(ctx, []byte("secret"), keybroker.WithEncryptionContext(map[string]string{"tenant": "acme"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Decrypt(ctx, envelope, keybroker.WithEncryptionContext(map[string]string{"tenant": "globex"}))
	if !errors.Is(err, keybroker.ErrDecryption) {
		t.Fatalf("want ErrDecryption, got %v", err)
	}
	var kbErr *keybroker.Error
	if !errors.As(err, &kbErr) || kbErr.Reason != "DECRYPTION_FAILED" || kbErr.Op != "decrypt" {
		t.Fatalf("unexpected error details: %#v", kbErr)
	}
	if _, err := c.Decrypt(ctx, []byte("not an envelope")); !errors.Is(err, keybroker.ErrDecryption) {
		t.Fatalf("garbage: want ErrDecryption, got %v", err)
	}
}

func TestUnknownKey(t *testing.T) {
	c, ctx := dial(t), context.Background()
	_, err := c.Encrypt(ctx, []byte("x"), keybroker.WithKey("no-such-key"))
	if !errors.Is(err, keybroker.ErrKeyNotFound) || !errors.Is(err, keybroker.ErrKMS) {
		t.Fatalf("want ErrKeyNotFound, got %v", err)
	}
	if _, err := c.Sign(ctx, "no-such-key", []byte("x")); !errors.Is(err, keybroker.ErrKeyNotFound) {
		t.Fatalf("Sign: want ErrKeyNotFound, got %v", err)
	}
}

func TestWrongKeyPurpose(t *testing.T) {
	c := dial(t)
	if _, err := c.Sign(context.Background(), "default", []byte("x")); !errors.Is(err, keybroker.ErrKeyState) {
		t.Fatalf("want ErrKeyState, got %v", err)
	}
}

func TestSignVerify(t *testing.T) {
	c, ctx := dial(t), context.Background()
	msg := []byte("invoice 42: EUR 100")
	sig, err := c.Sign(ctx, "signing", msg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Verify(ctx, "signing", msg, sig); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := c.Verify(ctx, "signing", []byte("invoice 42: EUR 900"), sig); !errors.Is(err, keybroker.ErrVerification) {
		t.Fatalf("tampered message: want ErrVerification, got %v", err)
	}
	bad := bytes.Clone(sig)
	bad[len(bad)-1] ^= 1
	if err := c.Verify(ctx, "signing", msg, bad); !errors.Is(err, keybroker.ErrVerification) {
		t.Fatalf("tampered signature: want ErrVerification, got %v", err)
	}
	pem, err := c.PublicKey(ctx, "signing")
	if err != nil || !strings.HasPrefix(string(pem), "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("PublicKey = %q, %v", pem, err)
	}
}

func TestHMAC(t *testing.T) {
	c, ctx := dial(t), context.Background()
	mac, err := c.HMAC(ctx, "hmac", []byte("amount=100"))
	if err != nil || len(mac) != 32 {
		t.Fatalf("HMAC = %x, %v", mac, err)
	}
	again, _ := c.HMAC(ctx, "hmac", []byte("amount=100"))
	if !bytes.Equal(mac, again) {
		t.Fatal("HMAC is not deterministic")
	}
	if err := c.HMACVerify(ctx, "hmac", []byte("amount=100"), mac); err != nil {
		t.Fatal(err)
	}
	if err := c.HMACVerify(ctx, "hmac", []byte("amount=900"), mac); !errors.Is(err, keybroker.ErrVerification) {
		t.Fatalf("want ErrVerification, got %v", err)
	}
}

func TestToken(t *testing.T) {
	c, ctx := dial(t), context.Background()
	tok, err := c.Token(ctx, 32)
	if err != nil || len(tok) != 43 {
		t.Fatalf("Token(32) = %q (%d chars), %v; want 43 URL-safe characters", tok, len(tok), err)
	}
	h, err := c.Token(ctx, 24, keybroker.WithTokenEncoding(keybroker.TokenHex))
	if err != nil || len(h) != 48 {
		t.Fatalf("hex Token(24) = %q, %v", h, err)
	}
	if _, err := hex.DecodeString(h); err != nil {
		t.Fatal(err)
	}
	raw, err := c.TokenBytes(ctx, 16)
	if err != nil || len(raw) != 16 {
		t.Fatalf("TokenBytes(16) = %x, %v", raw, err)
	}
	if _, err := c.Token(ctx, 8); !errors.Is(err, keybroker.ErrInvalidArgument) {
		t.Fatalf("Token(8): want ErrInvalidArgument, got %v", err)
	}
}

func TestUnavailable(t *testing.T) {
	c, err := keybroker.Dial(context.Background(), keybroker.WithSocket(filepath.Join(t.TempDir(), "none.sock")))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Encrypt(context.Background(), []byte("x"), keybroker.WithTimeout(2*time.Second))
	if !errors.Is(err, keybroker.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	if !strings.Contains(err.Error(), keybroker.EnvSocket) {
		t.Fatalf("message should name %s: %v", keybroker.EnvSocket, err)
	}
}

func TestSocketFromEnv(t *testing.T) {
	requireDaemon(t)
	t.Setenv(keybroker.EnvSocket, "unix://"+socket)
	c, err := keybroker.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Socket() != socket {
		t.Fatalf("Socket() = %q, want %q", c.Socket(), socket)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestExample(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs ./example")
	}
	requireDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "./example")
	cmd.Env = append(os.Environ(), keybroker.EnvSocket+"="+socket)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run ./example: %v\n%s", err, out)
	}
	for _, want := range []string{"decrypted: card", "wrong tenant rejected", "signature verified", "tampered message rejected: VERIFICATION_FAILED"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("example output lacks %q:\n%s", want, out)
		}
	}
}

// TestDocsShowExample keeps docs/clients/go.md printing example/main.go verbatim.
func TestDocsShowExample(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	example, err := os.ReadFile(filepath.Join(dir, "example", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(dir, "..", "..", "docs", "clients", "go.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, append([]byte("```go\n"), example...)) {
		t.Fatal("docs/clients/go.md does not contain example/main.go verbatim; copy it into the Example section")
	}
}

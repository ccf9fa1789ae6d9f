package keybroker_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	keybroker "keybroker.dev/client"
)

// socket is the dev daemon's socket, started once by TestMain.
var socket string

// TestMain runs a real dev daemon from the repository's .venv for the whole package.
func TestMain(m *testing.M) {
	os.Exit(runWithDaemon(m))
}

func runWithDaemon(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	python := filepath.Join(root, ".venv", "bin", "python")
	if _, err := os.Stat(python); err != nil {
		fmt.Fprintf(os.Stderr, "keybroker tests need the daemon in %s (run `make install`): %v\n", python, err)
		return 1
	}
	// Short base: Unix socket paths are limited to 107 bytes.
	state, err := os.MkdirTemp("/tmp", "kbgo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(state)
	socket = filepath.Join(state, "keybroker.sock")
	logPath := filepath.Join(state, "daemon.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logFile.Close()

	cmd := exec.Command(python, "-m", "broker", "serve", "--dev", "--state-dir", state)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KEYBROKER_SOCKET="+socket)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "start daemon: %v\n", err)
		return 1
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stopDaemon(cmd, exited)

	if err := waitReady(exited); err != nil {
		log, _ := os.ReadFile(logPath)
		fmt.Fprintf(os.Stderr, "daemon did not become ready: %v\n--- daemon log ---\n%s\n", err, log)
		return 1
	}
	code := m.Run()
	if code != 0 {
		log, _ := os.ReadFile(logPath)
		fmt.Fprintf(os.Stderr, "--- daemon log ---\n%s\n", log)
	}
	return code
}

// waitReady waits for the socket file, then for a SERVING health check.
func waitReady(exited <-chan error) error {
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("daemon exited: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if _, err := os.Stat(socket); err != nil {
			last = err
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := keybroker.Dial(ctx, keybroker.WithSocket(socket))
		if err == nil {
			err = c.Ping(ctx)
			c.Close()
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
	}
	return fmt.Errorf("timed out: %v", last)
}

func stopDaemon(cmd *exec.Cmd, exited <-chan error) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(os.Stderr, "daemon ignored SIGTERM; killing it")
		_ = cmd.Process.Kill()
		<-exited
	}
}

func dial(t *testing.T) *keybroker.Client {
	t.Helper()
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

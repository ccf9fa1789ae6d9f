// Package keybroker is the Go client of the keybroker daemon: envelope encryption,
// signatures, HMACs and tokens over gRPC on a Unix socket. Applications never see master
// keys or KMS credentials.
//
//	c, err := keybroker.Dial(ctx)
//	if err != nil { ... }
//	defer c.Close()
//	envelope, err := c.Encrypt(ctx, []byte("card"), keybroker.WithEncryptionContext(map[string]string{"tenant": "acme"}))
//
// Errors map the daemon's status code and its `keybroker-error-reason` trailer onto
// sentinel errors usable with errors.Is (ErrDecryption, ErrVerification, ErrKeyNotFound, …)
// and onto *Error for the details.
package keybroker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	pb "keybroker.dev/client/keybrokerv1"
)

// EnvSocket names the environment variable that gives the daemon's socket path.
const EnvSocket = "KEYBROKER_SOCKET"

// DefaultTimeout is the deadline of every call unless WithDefaultTimeout or WithTimeout
// says otherwise. A shorter deadline on the caller's context always wins.
const DefaultTimeout = 10 * time.Second

// DefaultKey is the logical key Encrypt uses when WithKey is not given.
const DefaultKey = "default"

const (
	devSocket    = ".keybroker/keybroker.sock"
	systemSocket = "/run/keybroker/keybroker.sock"
	maxMessage   = 64 << 20
)

// Client is a connection to the daemon. It is safe for concurrent use and meant to be
// shared; Close releases it.
type Client struct {
	conn    *grpc.ClientConn
	socket  string
	timeout time.Duration

	envelope pb.EnvelopeServiceClient
	signing  pb.SigningServiceClient
	hashing  pb.HashingServiceClient
	tokens   pb.TokenServiceClient
	health   healthpb.HealthClient
}

type dialConfig struct {
	socket   string
	timeout  time.Duration
	grpcOpts []grpc.DialOption
}

// DialOption configures Dial.
type DialOption func(*dialConfig)

// WithSocket sets the daemon's socket path (a plain path, "unix:PATH" or "unix://PATH");
// it takes precedence over KEYBROKER_SOCKET.
func WithSocket(path string) DialOption { return func(c *dialConfig) { c.socket = path } }

// WithDefaultTimeout sets the deadline applied to every call (DefaultTimeout otherwise).
func WithDefaultTimeout(d time.Duration) DialOption {
	return func(c *dialConfig) { c.timeout = d }
}

// WithGRPCDialOptions appends options to the underlying grpc.NewClient call.
func WithGRPCDialOptions(opts ...grpc.DialOption) DialOption {
	return func(c *dialConfig) { c.grpcOpts = append(c.grpcOpts, opts...) }
}

// Dial creates a client for the daemon's socket, found in this order: WithSocket,
// KEYBROKER_SOCKET, ./.keybroker/keybroker.sock if it exists, /run/keybroker/keybroker.sock.
// The connection is made lazily, so Dial does not fail when the daemon is down: the first
// call then returns an error matching ErrUnavailable (Ping checks it up front).
func Dial(ctx context.Context, opts ...DialOption) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := dialConfig{timeout: DefaultTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	socket, err := resolveSocket(cfg.socket)
	if err != nil {
		return nil, err
	}
	grpcOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)),
	}, cfg.grpcOpts...)
	conn, err := grpc.NewClient("unix://"+socket, grpcOpts...)
	if err != nil {
		return nil, fmt.Errorf("keybroker: socket %s: %w", socket, err)
	}
	return &Client{
		conn:     conn,
		socket:   socket,
		timeout:  cfg.timeout,
		envelope: pb.NewEnvelopeServiceClient(conn),
		signing:  pb.NewSigningServiceClient(conn),
		hashing:  pb.NewHashingServiceClient(conn),
		tokens:   pb.NewTokenServiceClient(conn),
		health:   healthpb.NewHealthClient(conn),
	}, nil
}

// resolveSocket returns the absolute socket path from an explicit value or the defaults.
func resolveSocket(explicit string) (string, error) {
	path := explicit
	if path == "" {
		path = os.Getenv(EnvSocket)
	}
	if path == "" {
		if _, err := os.Stat(devSocket); err == nil {
			path = devSocket
		} else {
			path = systemSocket
		}
	}
	path = strings.TrimPrefix(strings.TrimPrefix(path, "unix://"), "unix:")
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("keybroker: socket %q: %w", path, err)
	}
	return abs, nil
}

// Socket returns the absolute path of the socket this client talks to.
func (c *Client) Socket() string { return c.socket }

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Ping returns nil when the daemon answers its health check as SERVING.
func (c *Client) Ping(ctx context.Context, opts ...Option) error {
	cfg := c.callConfig(opts)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&trailer))
	if err != nil {
		return c.wrap("ping", err, trailer)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return &Error{Op: "ping", Message: "daemon is " + resp.GetStatus().String(), kinds: []error{ErrUnavailable}}
	}
	return nil
}

// Encrypt seals plaintext under a logical key (WithKey, "default" otherwise) and returns a
// binary envelope. The encryption context (WithEncryptionContext) must be given again to
// Decrypt unless WithStoredContext is set.
func (c *Client) Encrypt(ctx context.Context, plaintext []byte, opts ...Option) ([]byte, error) {
	cfg := c.callConfig(opts)
	key := cfg.key
	if key == "" {
		key = DefaultKey
	}
	req := &pb.EncryptRequest{Key: key, Plaintext: plaintext, Context: cfg.context, StoreContext: cfg.storeContext}
	resp, err := call(ctx, c, "encrypt", cfg, req, c.envelope.Encrypt)
	return resp.GetCiphertext(), err
}

// Decrypt opens an envelope made by Encrypt; a wrong context, a tampered envelope or bytes
// that are not an envelope give an error matching ErrDecryption.
func (c *Client) Decrypt(ctx context.Context, ciphertext []byte, opts ...Option) ([]byte, error) {
	cfg := c.callConfig(opts)
	req := &pb.DecryptRequest{Ciphertext: ciphertext, Context: cfg.context}
	resp, err := call(ctx, c, "decrypt", cfg, req, c.envelope.Decrypt)
	return resp.GetPlaintext(), err
}

// Sign signs data with a signing key held by the daemon: DER for ECDSA, raw bytes for
// Ed25519 and RSA-PSS.
func (c *Client) Sign(ctx context.Context, key string, data []byte, opts ...Option) ([]byte, error) {
	cfg := c.callConfig(opts)
	req := &pb.SignRequest{Key: key, Input: &pb.SignRequest_Data{Data: data}}
	resp, err := call(ctx, c, "sign", cfg, req, c.signing.Sign)
	return resp.GetSignature(), err
}

// Verify checks a signature made by Sign: nil when it is valid, an error matching
// ErrVerification when it is not. WithKeyVersion names the version that signed
// (every enabled version is tried otherwise).
func (c *Client) Verify(ctx context.Context, key string, data, signature []byte, opts ...Option) error {
	cfg := c.callConfig(opts)
	req := &pb.VerifyRequest{Key: key, Input: &pb.VerifyRequest_Data{Data: data}, Signature: signature, KeyVersion: cfg.keyVersion}
	_, err := call(ctx, c, "verify", cfg, req, c.signing.Verify)
	return err
}

// PublicKey returns the PEM public half of an asymmetric key (WithKeyVersion for an older
// version), for verifying signatures without the daemon.
func (c *Client) PublicKey(ctx context.Context, key string, opts ...Option) ([]byte, error) {
	cfg := c.callConfig(opts)
	req := &pb.GetPublicKeyRequest{Key: key, KeyVersion: cfg.keyVersion}
	resp, err := call(ctx, c, "public_key", cfg, req, c.signing.GetPublicKey)
	if err != nil {
		return nil, err
	}
	return []byte(resp.GetPem()), nil
}

// HMAC returns HMAC-SHA256 of data under a broker HMAC key.
func (c *Client) HMAC(ctx context.Context, key string, data []byte, opts ...Option) ([]byte, error) {
	cfg := c.callConfig(opts)
	req := &pb.ComputeHmacRequest{Key: key, Data: data}
	resp, err := call(ctx, c, "hmac", cfg, req, c.hashing.ComputeHmac)
	return resp.GetMac(), err
}

// HMACVerify checks a MAC in constant time in the daemon: nil when it matches, an error
// matching ErrVerification when it does not.
func (c *Client) HMACVerify(ctx context.Context, key string, data, mac []byte, opts ...Option) error {
	cfg := c.callConfig(opts)
	req := &pb.VerifyHmacRequest{Key: key, Data: data, Mac: mac, KeyVersion: cfg.keyVersion}
	_, err := call(ctx, c, "hmac_verify", cfg, req, c.hashing.VerifyHmac)
	return err
}

// TokenEncoding selects the text form Token returns.
type TokenEncoding int

const (
	// TokenURLSafe is unpadded URL-safe base64 (the default).
	TokenURLSafe TokenEncoding = iota
	// TokenHex is lowercase hexadecimal.
	TokenHex
)

// Token returns length random bytes (16..1024; 0 means 32) from the daemon's CSPRNG as
// text: unpadded URL-safe base64, or hex with WithTokenEncoding(TokenHex).
func (c *Client) Token(ctx context.Context, length int, opts ...Option) (string, error) {
	cfg := c.callConfig(opts)
	enc := pb.TokenEncoding_TOKEN_ENCODING_URLSAFE
	if cfg.tokenEncoding == TokenHex {
		enc = pb.TokenEncoding_TOKEN_ENCODING_HEX
	}
	resp, err := c.token(ctx, "token", cfg, length, enc)
	return resp.GetText(), err
}

// TokenBytes returns length raw random bytes (16..1024; 0 means 32) from the daemon's CSPRNG.
func (c *Client) TokenBytes(ctx context.Context, length int, opts ...Option) ([]byte, error) {
	resp, err := c.token(ctx, "token", c.callConfig(opts), length, pb.TokenEncoding_TOKEN_ENCODING_BYTES)
	return resp.GetToken(), err
}

func (c *Client) token(ctx context.Context, op string, cfg callConfig, length int, enc pb.TokenEncoding) (*pb.GenerateTokenResponse, error) {
	if length < 0 || length > 1<<20 {
		return nil, &Error{Op: op, Message: fmt.Sprintf("token length %d is out of range", length), kinds: []error{ErrInvalidArgument}}
	}
	req := &pb.GenerateTokenRequest{Length: uint32(length), Encoding: enc}
	return call(ctx, c, op, cfg, req, c.tokens.GenerateToken)
}

// call runs one unary RPC under the call's deadline and maps its failure.
func call[Req, Resp any](
	ctx context.Context, c *Client, op string, cfg callConfig, req Req,
	rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error),
) (Resp, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	var trailer metadata.MD
	resp, err := rpc(ctx, req, grpc.Trailer(&trailer))
	if err != nil {
		var zero Resp
		return zero, c.wrap(op, err, trailer)
	}
	return resp, nil
}

// wrap turns a gRPC failure into an *Error; other errors pass through unchanged.
func (c *Client) wrap(op string, err error, trailer metadata.MD) error {
	e := fromRPC(op, err, trailer)
	if e == nil {
		return err
	}
	if errors.Is(e, ErrUnavailable) {
		e.Message += fmt.Sprintf(" (socket %s: check that the daemon is running and that %s points at its socket)", c.socket, EnvSocket)
	}
	return e
}

package keybroker

import (
	"maps"
	"time"
)

// Option configures one call; options a call does not use are ignored.
type Option func(*callConfig)

type callConfig struct {
	timeout       time.Duration
	key           string
	context       map[string]string
	storeContext  bool
	keyVersion    uint32
	tokenEncoding TokenEncoding
}

func (c *Client) callConfig(opts []Option) callConfig {
	cfg := callConfig{timeout: c.timeout}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// WithTimeout sets this call's deadline, overriding the client's default.
func WithTimeout(d time.Duration) Option { return func(c *callConfig) { c.timeout = d } }

// WithKey names the logical key for Encrypt ("default" otherwise).
func WithKey(name string) Option { return func(c *callConfig) { c.key = name } }

// WithEncryptionContext binds an encryption context (authenticated, not encrypted) to
// Encrypt; Decrypt needs the same context again. Later calls merge into earlier ones.
func WithEncryptionContext(ctx map[string]string) Option {
	return func(c *callConfig) {
		if c.context == nil {
			c.context = make(map[string]string, len(ctx))
		}
		maps.Copy(c.context, ctx)
	}
}

// WithStoredContext makes Encrypt store the context in the envelope, so that Decrypt
// does not need it.
func WithStoredContext() Option { return func(c *callConfig) { c.storeContext = true } }

// WithKeyVersion names the key version for Verify, HMACVerify and PublicKey
// (0, the default, means every enabled version, or the current one for PublicKey).
func WithKeyVersion(v uint32) Option { return func(c *callConfig) { c.keyVersion = v } }

// WithTokenEncoding selects Token's text form (TokenURLSafe by default).
func WithTokenEncoding(e TokenEncoding) Option {
	return func(c *callConfig) { c.tokenEncoding = e }
}

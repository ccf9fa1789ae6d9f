package dev.keybroker.client;

import com.google.protobuf.ByteString;
import io.grpc.ManagedChannel;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.netty.channel.ChannelOption;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.epoll.Epoll;
import io.netty.channel.epoll.EpollDomainSocketChannel;
import io.netty.channel.epoll.EpollEventLoopGroup;
import io.netty.channel.unix.DomainSocketAddress;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;
import keybroker.v1.Envelope;
import keybroker.v1.EnvelopeServiceGrpc;
import keybroker.v1.Hashing;
import keybroker.v1.HashingServiceGrpc;
import keybroker.v1.Signing;
import keybroker.v1.SigningServiceGrpc;
import keybroker.v1.Token;
import keybroker.v1.TokenServiceGrpc;

/**
 * Client of the keybroker daemon over gRPC on its Unix socket (Linux, netty epoll).
 *
 * <p>One client is thread-safe and meant to be shared; close it when done. The channel connects
 * on the first call, so {@link #connect()} never fails because the daemon is down: the first call
 * then throws {@link BrokerUnavailableException}. Every call has a deadline ({@link
 * #DEFAULT_TIMEOUT} unless given to {@link #connect(Path, Duration)}).
 */
public final class KeybrokerClient implements AutoCloseable {
  /** Environment variable naming the daemon's socket. */
  public static final String SOCKET_ENV = "KEYBROKER_SOCKET";
  /** Socket of a dev daemon ({@code keybroker serve --dev}) started in the current directory. */
  public static final Path DEV_SOCKET = Path.of(".keybroker", "keybroker.sock");
  /** Socket of a system daemon. */
  public static final Path SYSTEM_SOCKET = Path.of("/run/keybroker/keybroker.sock");
  /** Default per-call deadline. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(10);
  /** Default logical key for envelope encryption. */
  public static final String DEFAULT_KEY = "default";

  private static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

  private final Path socket;
  private final Duration timeout;
  private final EventLoopGroup group;
  private final ManagedChannel channel;
  private final EnvelopeServiceGrpc.EnvelopeServiceBlockingStub envelope;
  private final SigningServiceGrpc.SigningServiceBlockingStub signing;
  private final HashingServiceGrpc.HashingServiceBlockingStub hashing;
  private final TokenServiceGrpc.TokenServiceBlockingStub tokens;

  private KeybrokerClient(Path socket, Duration timeout) {
    if (!Epoll.isAvailable()) {
      throw new KeybrokerException(
          "netty epoll transport unavailable (Linux x86_64 needed for Unix sockets): "
              + Epoll.unavailabilityCause(),
          null, null, null, Epoll.unavailabilityCause());
    }
    this.socket = socket;
    this.timeout = timeout;
    this.group = new EpollEventLoopGroup(1);
    this.channel =
        NettyChannelBuilder.forAddress(new DomainSocketAddress(socket.toString()))
            .eventLoopGroup(group)
            .channelType(EpollDomainSocketChannel.class)
            .overrideAuthority("localhost")
            .usePlaintext()
            .maxInboundMessageSize(MAX_MESSAGE_BYTES)
            // grpc-netty always sets SO_KEEPALIVE, which a Unix socket does not have (netty
            // logs a warning per connection); a null value removes the option again.
            .withOption(ChannelOption.SO_KEEPALIVE, null)
            .build();
    this.envelope = EnvelopeServiceGrpc.newBlockingStub(channel);
    this.signing = SigningServiceGrpc.newBlockingStub(channel);
    this.hashing = HashingServiceGrpc.newBlockingStub(channel);
    this.tokens = TokenServiceGrpc.newBlockingStub(channel);
  }

  /** Connects to the socket found by {@link #resolveSocket(Path) resolveSocket(null)}. */
  public static KeybrokerClient connect() {
    return connect(null, DEFAULT_TIMEOUT);
  }

  /** Connects to {@code socket} (or, when {@code null}, the default search order). */
  public static KeybrokerClient connect(Path socket) {
    return connect(socket, DEFAULT_TIMEOUT);
  }

  /** Connects to {@code socket} with {@code timeout} as the deadline of every call. */
  public static KeybrokerClient connect(Path socket, Duration timeout) {
    Objects.requireNonNull(timeout, "timeout");
    if (timeout.isNegative() || timeout.isZero()) {
      throw new IllegalArgumentException("timeout must be positive");
    }
    return new KeybrokerClient(resolveSocket(socket), timeout);
  }

  /**
   * The socket to use: {@code explicit} if not null; else {@code KEYBROKER_SOCKET}; else {@code
   * ./.keybroker/keybroker.sock} if it exists; else {@code /run/keybroker/keybroker.sock}. A
   * {@code unix:} prefix is accepted in the variable; relative paths are taken from the current
   * directory.
   */
  public static Path resolveSocket(Path explicit) {
    Path chosen = explicit;
    if (chosen == null) {
      String env = System.getenv(SOCKET_ENV);
      if (env != null && !env.isBlank()) {
        chosen = Path.of(env.startsWith("unix:") ? env.substring("unix:".length()) : env);
      } else if (Files.exists(DEV_SOCKET)) {
        chosen = DEV_SOCKET;
      } else {
        chosen = SYSTEM_SOCKET;
      }
    }
    return chosen.toAbsolutePath().normalize();
  }

  /** The socket this client talks to. */
  public Path socket() {
    return socket;
  }

  /** The deadline of every call. */
  public Duration timeout() {
    return timeout;
  }

  // ---- envelope encryption ------------------------------------------------------------------

  /** Seals {@code plaintext} under the {@code default} key with no context. */
  public byte[] encrypt(byte[] plaintext) {
    return encrypt(plaintext, DEFAULT_KEY, Map.of());
  }

  /**
   * Seals {@code plaintext} under logical key {@code key} (null means {@code default}), bound to
   * {@code context} (null means none): the same context must be presented to decrypt.
   */
  public byte[] encrypt(byte[] plaintext, String key, Map<String, String> context) {
    Objects.requireNonNull(plaintext, "plaintext");
    Envelope.EncryptRequest request =
        Envelope.EncryptRequest.newBuilder()
            .setKey(key == null ? DEFAULT_KEY : key)
            .setPlaintext(ByteString.copyFrom(plaintext))
            .putAllContext(context == null ? Map.of() : context)
            .build();
    return call(() -> envelope().encrypt(request)).getCiphertext().toByteArray();
  }

  /** Opens an envelope sealed with no context (or with a stored context). */
  public byte[] decrypt(byte[] ciphertext) {
    return decrypt(ciphertext, Map.of());
  }

  /** Opens an envelope; throws {@link DecryptionException} if it does not open. */
  public byte[] decrypt(byte[] ciphertext, Map<String, String> context) {
    Objects.requireNonNull(ciphertext, "ciphertext");
    Envelope.DecryptRequest request =
        Envelope.DecryptRequest.newBuilder()
            .setCiphertext(ByteString.copyFrom(ciphertext))
            .putAllContext(context == null ? Map.of() : context)
            .build();
    return call(() -> envelope().decrypt(request)).getPlaintext().toByteArray();
  }

  // ---- signatures ---------------------------------------------------------------------------

  /** Signs {@code data} with signing key {@code key} (DER for ECDSA, raw for Ed25519/RSA-PSS). */
  public byte[] sign(byte[] data, String key) {
    Objects.requireNonNull(data, "data");
    Objects.requireNonNull(key, "key");
    Signing.SignRequest request =
        Signing.SignRequest.newBuilder().setKey(key).setData(ByteString.copyFrom(data)).build();
    return call(() -> signing().sign(request)).getSignature().toByteArray();
  }

  /** Returns normally for a valid signature; throws {@link VerificationException} otherwise. */
  public void verify(byte[] data, byte[] signature, String key) {
    Objects.requireNonNull(data, "data");
    Objects.requireNonNull(signature, "signature");
    Objects.requireNonNull(key, "key");
    Signing.VerifyRequest request =
        Signing.VerifyRequest.newBuilder()
            .setKey(key)
            .setData(ByteString.copyFrom(data))
            .setSignature(ByteString.copyFrom(signature))
            .build();
    call(() -> signing().verify(request));
  }

  /** The PEM (SubjectPublicKeyInfo) public half of an asymmetric key. */
  public String publicKey(String key) {
    Objects.requireNonNull(key, "key");
    Signing.GetPublicKeyRequest request =
        Signing.GetPublicKeyRequest.newBuilder().setKey(key).build();
    return call(() -> signing().getPublicKey(request)).getPem();
  }

  // ---- HMAC ---------------------------------------------------------------------------------

  /** HMAC-SHA256 of {@code data} under HMAC key {@code key}. */
  public byte[] hmac(byte[] data, String key) {
    Objects.requireNonNull(data, "data");
    Objects.requireNonNull(key, "key");
    Hashing.ComputeHmacRequest request =
        Hashing.ComputeHmacRequest.newBuilder()
            .setKey(key)
            .setData(ByteString.copyFrom(data))
            .build();
    return call(() -> hashing().computeHmac(request)).getMac().toByteArray();
  }

  /** Returns normally when {@code mac} matches; throws {@link VerificationException} otherwise. */
  public void hmacVerify(byte[] data, byte[] mac, String key) {
    Objects.requireNonNull(data, "data");
    Objects.requireNonNull(mac, "mac");
    Objects.requireNonNull(key, "key");
    Hashing.VerifyHmacRequest request =
        Hashing.VerifyHmacRequest.newBuilder()
            .setKey(key)
            .setData(ByteString.copyFrom(data))
            .setMac(ByteString.copyFrom(mac))
            .build();
    call(() -> hashing().verifyHmac(request));
  }

  // ---- tokens -------------------------------------------------------------------------------

  /** 32 random bytes as unpadded URL-safe base64 (43 characters). */
  public String token() {
    return token(32);
  }

  /** {@code length} (16..1024) random bytes as unpadded URL-safe base64 text. */
  public String token(int length) {
    return generateToken(length, Token.TokenEncoding.TOKEN_ENCODING_URLSAFE).getText();
  }

  /** {@code length} (16..1024) random bytes as lowercase hex ({@code 2 * length} characters). */
  public String tokenHex(int length) {
    return generateToken(length, Token.TokenEncoding.TOKEN_ENCODING_HEX).getText();
  }

  /** {@code length} (16..1024) raw random bytes. */
  public byte[] tokenBytes(int length) {
    return generateToken(length, Token.TokenEncoding.TOKEN_ENCODING_BYTES)
        .getToken()
        .toByteArray();
  }

  private Token.GenerateTokenResponse generateToken(int length, Token.TokenEncoding encoding) {
    if (length < 1) {
      // 0 would mean "32" on the wire; refuse it rather than surprise the caller.
      throw new InvalidParameterException(
          "token length must be positive, got " + length, null, null, null, null);
    }
    Token.GenerateTokenRequest request =
        Token.GenerateTokenRequest.newBuilder().setLength(length).setEncoding(encoding).build();
    return call(() -> tokens().generateToken(request));
  }

  // ---- plumbing -----------------------------------------------------------------------------

  private EnvelopeServiceGrpc.EnvelopeServiceBlockingStub envelope() {
    return envelope.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  private SigningServiceGrpc.SigningServiceBlockingStub signing() {
    return signing.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  private HashingServiceGrpc.HashingServiceBlockingStub hashing() {
    return hashing.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  private TokenServiceGrpc.TokenServiceBlockingStub tokens() {
    return tokens.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
  }

  private <T> T call(Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      throw Errors.map(e, socket.toString());
    }
  }

  /** Shuts the channel down, waiting up to 5 s for calls in flight. */
  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    } finally {
      group.shutdownGracefully(0, 1, TimeUnit.SECONDS);
    }
  }
}

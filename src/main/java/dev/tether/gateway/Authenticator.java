package dev.tether.gateway;

import com.auth0.jwt.JWT;
import com.auth0.jwt.JWTVerifier;
import com.auth0.jwt.algorithms.Algorithm;
import com.auth0.jwt.exceptions.JWTVerificationException;
import java.util.Optional;

/**
 * Who a handshake speaks for. In {@code dev} mode the client names its user; in {@code hmac}
 * mode it presents an HS256 JWT whose {@code sub} is the user id.
 */
public final class Authenticator {
  private final GatewaySettings.AuthMode mode;
  private final JWTVerifier verifier;

  public Authenticator(GatewaySettings settings) {
    this.mode = settings.authMode();
    this.verifier =
        mode == GatewaySettings.AuthMode.HMAC
            ? JWT.require(Algorithm.HMAC256(settings.jwtSecret())).build()
            : null;
  }

  public boolean devMode() {
    return mode == GatewaySettings.AuthMode.DEV;
  }

  /** The user the credentials name, or empty when they are missing or wrong. */
  public Optional<String> authenticate(String user, String token) {
    if (mode == GatewaySettings.AuthMode.DEV) {
      return user == null || user.isEmpty() ? Optional.empty() : Optional.of(user);
    }
    if (token == null || token.isEmpty()) return Optional.empty();
    try {
      String subject = verifier.verify(token).getSubject();
      return subject == null || subject.isEmpty() || subject.length() > FrameCodec.MAX_NAME_LENGTH
          ? Optional.empty()
          : Optional.of(subject);
    } catch (JWTVerificationException e) {
      return Optional.empty();
    }
  }

  /** Whether the handshake carries credentials at all. */
  public boolean hasCredentials(String user, String token) {
    return devMode() ? user != null : token != null;
  }
}

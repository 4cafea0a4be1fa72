package dev.tether.session;

import dev.tether.CborSerializable;

/** Where an upstream or API message goes: {@code session:<id>}, {@code user:<id>} or {@code room:<name>}. */
public record Target(Kind kind, String id) implements CborSerializable {

  public enum Kind {
    SESSION,
    USER,
    ROOM
  }

  /** Parses the contract's {@code to} field; returns null when it is not one of the three forms. */
  public static Target parse(String to) {
    if (to == null) return null;
    int colon = to.indexOf(':');
    if (colon <= 0 || colon == to.length() - 1) return null;
    String id = to.substring(colon + 1);
    if (id.length() > 255) return null;
    return switch (to.substring(0, colon)) {
      case "session" -> new Target(Kind.SESSION, id);
      case "user" -> new Target(Kind.USER, id);
      case "room" -> new Target(Kind.ROOM, id);
      default -> null;
    };
  }

  @Override
  public String toString() {
    return kind.name().toLowerCase() + ":" + id;
  }
}

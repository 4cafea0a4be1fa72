package dev.tether;

/**
 * Marker for every message, event and state that crosses a node boundary or enters the journal.
 * Bound to Jackson CBOR in serialization.conf.
 */
public interface CborSerializable {}

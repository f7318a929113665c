// Package pbwire reads and writes protobuf wire encoding by hand, on top of protowire: a field walker that skips
// what it does not know, typed accessors that check wire types, UTF-8 and ranges, and encoders for the field
// kinds the agent writes. It serves the agent's own gossip records (discovery) and istiod's resources (xds),
// neither of which uses generated code.
//
// Decoding failures are *Error values, one Kind each, so that a caller can keep its own vocabulary of failures
// (discovery's drop reasons) or use the messages as they are (xds).
//
// pbwire is a leaf: it imports only the standard library and protowire, never an agent package.
package pbwire

// Package config turns the agent's TOML file into a validated runtime Config.
//
// Decoding is strict: an unknown key or a value of the wrong type is a Problem that
// names the file, the line and the key path. The user-facing File struct mirrors the
// TOML; the runtime Config has every default resolved and every value parsed.
// Loading never half-applies: the caller gets a complete Config or the Problems.
//
// config is a leaf: it imports nothing of the agent.
package config

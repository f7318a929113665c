package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c, <-ch
}

// client <-> [down | relay | up] <-> server: half-close travels through and the
// other direction keeps flowing.
func TestRelayHalfClose(t *testing.T) {
	client, down := tcpPair(t)
	up, server := tcpPair(t)
	done := make(chan Bytes, 1)
	go func() {
		b, _ := relay(down, up)
		done <- b
	}()
	req := bytes.Repeat([]byte("q"), 100000)
	if _, err := client.Write(req); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(server)
	if err != nil || !bytes.Equal(got, req) {
		t.Fatalf("server read %d bytes, err %v", len(got), err)
	}
	// The server answers after the client's half-close.
	resp := bytes.Repeat([]byte("r"), 50000)
	if _, err := server.Write(resp); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err = io.ReadAll(client)
	if err != nil || !bytes.Equal(got, resp) {
		t.Fatalf("client read %d bytes, err %v", len(got), err)
	}
	select {
	case b := <-done:
		if b.Sent != int64(len(req)) || b.Received != int64(len(resp)) {
			t.Errorf("counted %+v", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not end")
	}
	client.Close()
}

package proxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// The kernel's counts of a real TCP connection: what the client sent, what it
// acknowledged of the answer.
func TestTCPProgress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	progress := tcpProgress(server.(*net.TCPConn))
	if _, err := client.Write(make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write(make([]byte, 700)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(client, make([]byte, 700)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sent, received := progress()
		if sent == 5000 && received == 700 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress %d, %d; want 5000 from the client and 700 acknowledged", sent, received)
		}
		time.Sleep(10 * time.Millisecond)
	}
	server.Close()
	if sent, received := progress(); sent != 5000 || received != 700 {
		t.Errorf("after close: %d, %d; want the last values", sent, received)
	}
}

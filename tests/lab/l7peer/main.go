// Command l7peer is the lab's HTTP peers for the waypoint's L7 tests, real implementations on both ends:
// grpc-go with its interop test service's protocol (grpc.testing.TestService, server streaming included) and golang.org/x/net's websocket.
//
//	l7peer grpc-server ADDR        serve grpc.testing.TestService on ADDR
//	l7peer grpc-client ADDR N      call UnaryCall, then StreamingOutputCall for N messages; print what came
//	l7peer ws-server ADDR          echo websocket messages on ADDR/echo, prefixed with "echo: "
//	l7peer ws-client URL MSG...    send each MSG on one websocket to URL and print each answer
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "l7peer:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: l7peer grpc-server|grpc-client|ws-server|ws-client ...")
	}
	switch args[0] {
	case "grpc-server":
		ln, err := net.Listen("tcp", args[1])
		if err != nil {
			return err
		}
		s := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(s, testService{})
		return s.Serve(ln)
	case "grpc-client":
		if len(args) != 3 {
			return fmt.Errorf("grpc-client ADDR N")
		}
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return grpcClient(args[1], n)
	case "ws-server":
		mux := http.NewServeMux()
		mux.Handle("/echo", websocket.Handler(func(ws *websocket.Conn) {
			for {
				var msg string
				if err := websocket.Message.Receive(ws, &msg); err != nil {
					return
				}
				if err := websocket.Message.Send(ws, "echo: "+msg); err != nil {
					return
				}
			}
		}))
		return (&http.Server{Addr: args[1], Handler: mux, ReadHeaderTimeout: 10 * time.Second}).ListenAndServe()
	case "ws-client":
		ws, err := websocket.Dial(args[1], "", "http://lab/")
		if err != nil {
			return err
		}
		defer ws.Close()
		for _, m := range args[2:] {
			if err := websocket.Message.Send(ws, m); err != nil {
				return err
			}
			var answer string
			if err := websocket.Message.Receive(ws, &answer); err != nil {
				return err
			}
			fmt.Println(answer)
		}
		return nil
	}
	return fmt.Errorf("unknown mode %q", args[0])
}

func grpcClient(addr string, n int) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := testgrpc.NewTestServiceClient(conn)
	resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 10})
	if err != nil {
		return fmt.Errorf("UnaryCall: %w", err)
	}
	fmt.Println("unary", len(resp.GetPayload().GetBody()))
	params := make([]*testgrpc.ResponseParameters, n)
	for i := range params {
		params[i] = &testgrpc.ResponseParameters{Size: int32(100 + i)}
	}
	stream, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		return fmt.Errorf("StreamingOutputCall: %w", err)
	}
	for i := 0; ; i++ {
		m, err := stream.Recv()
		if err != nil {
			if i == n && errors.Is(err, io.EOF) {
				fmt.Println("stream done", i)
				return nil
			}
			return fmt.Errorf("after %d messages: %w", i, err)
		}
		fmt.Println("stream", i, len(m.GetPayload().GetBody()))
	}
}

// testService answers grpc.testing.TestService's unary and server-streaming calls with payloads of the sizes
// asked for.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

func payload(size int32) *testgrpc.Payload {
	return &testgrpc.Payload{Body: make([]byte, max(size, 0))}
}

func (testService) UnaryCall(_ context.Context, r *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Payload: payload(r.GetResponseSize())}, nil
}

func (testService) StreamingOutputCall(r *testgrpc.StreamingOutputCallRequest, s testgrpc.TestService_StreamingOutputCallServer) error {
	for _, p := range r.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: payload(p.GetSize())}); err != nil {
			return err
		}
	}
	return nil
}

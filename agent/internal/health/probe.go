package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
)

// maxBody is how much of an HTTP response body a check reads before closing.
const maxBody = 4 << 10

// dialFunc connects a check to its target; see New.
type dialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// prober runs single checks. Its HTTP client never reuses a connection, never
// follows a redirect and ignores proxy settings from the environment.
type prober struct {
	dial   dialFunc
	client *http.Client
}

func newProber(dial dialFunc) *prober {
	return &prober{
		dial: dial,
		client: &http.Client{
			Transport: &http.Transport{
				DialContext:       dial,
				DisableKeepAlives: true,
				Proxy:             nil, // never HTTP_PROXY: the target is a local workload
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// check runs k once and returns why it failed, or nil. Every failure is one of
// three: connect (no connection or no response), timeout, status.
func (p *prober) check(ctx context.Context, k Check) error {
	ctx, cancel := context.WithTimeout(ctx, k.Timeout)
	defer cancel()
	var err error
	switch k.Kind {
	case KindTCP:
		err = p.tcp(ctx, k)
	case KindHTTP:
		err = p.http(ctx, k)
	default:
		err = fmt.Errorf("unknown kind %q", k.Kind)
	}
	if err == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timeout after %v", k.Timeout)
	}
	return fmt.Errorf("health: %s %s: %w", k.Kind, describe(k), err)
}

func describe(k Check) string {
	if k.Kind == KindHTTP {
		return k.Target.String() + k.Path
	}
	return k.Target.String()
}

func (p *prober) tcp(ctx context.Context, k Check) error {
	conn, err := p.dial(ctx, "tcp", k.Target.String())
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	_ = conn.Close() // connected is all a TCP check asks
	return nil
}

func (p *prober) http(ctx context.Context, k Check) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+k.Target.String()+k.Path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "ambient-agent-health")
	resp, err := p.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // drop the repeated "Get <url>:"
		}
		return fmt.Errorf("connect: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

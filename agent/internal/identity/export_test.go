package identity

import "github.com/spiffe/go-spiffe/v2/workloadapi"

// SpireUpdate hands a spire source an X.509 context as if the SPIRE agent had pushed it.
func SpireUpdate(src Source, c *workloadapi.X509Context) { src.(*spireSource).OnX509ContextUpdate(c) }

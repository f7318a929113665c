package hbone

import "github.com/ambient-agent/ambient-agent/agent/internal/bufcopy"

// bufPool hands out chunkSize buffers. It belongs to a Server or Pool (no package-level pools) and is shared by
// their connections.
type bufPool = bufcopy.Pool

func newBufPool() *bufPool { return bufcopy.NewPool(chunkSize) }

// chunk is a pooled buffer with its first n bytes filled.
type chunk struct {
	buf *[]byte
	n   int
}

// recvQueue holds a stream's received, unread DATA. All methods run under the connection's mutex; the two
// exceptions are the byte copies themselves: the read loop fills the spare capacity of the tail chunk (between
// spare and commit, flag filling) and the consumer reads the head chunk (between peek and consume, flag busy)
// without the lock. Neither region overlaps, and a chunk is only recycled when no one holds a piece of it.
type recvQueue struct {
	chunks  []chunk
	off     int // bytes of chunks[0] already consumed
	size    int // unread bytes buffered
	filling bool
	busy    bool
	dead    bool // released: recycle everything as soon as no one is copying
}

// spare returns free room at the tail (taking a fresh chunk when the tail is full) for the read loop to fill.
func (q *recvQueue) spare(bp *bufPool) []byte {
	if len(q.chunks) == 0 || q.chunks[len(q.chunks)-1].n == chunkSize {
		q.chunks = append(q.chunks, chunk{buf: bp.Get()})
	}
	t := &q.chunks[len(q.chunks)-1]
	q.filling = true
	return (*t.buf)[t.n:]
}

// commit records n bytes written into the room spare returned. It reports false when the queue was released
// meanwhile: the bytes are then dropped and the caller refunds them to the connection window.
func (q *recvQueue) commit(n int, bp *bufPool) bool {
	q.filling = false
	if q.dead {
		q.release(bp)
		return false
	}
	q.chunks[len(q.chunks)-1].n += n
	q.size += n
	return true
}

// peek returns the unread bytes of the head chunk; the caller copies them out and then calls consume.
func (q *recvQueue) peek() []byte {
	h := q.chunks[0]
	q.busy = true
	return (*h.buf)[q.off:h.n]
}

// consume drops n bytes read from the head chunk and recycles the chunk once it is used up.
func (q *recvQueue) consume(n int, bp *bufPool) {
	q.busy = false
	if q.dead {
		q.release(bp)
		return
	}
	q.off += n
	q.size -= n
	h := q.chunks[0]
	if q.off < h.n || (len(q.chunks) == 1 && q.filling) {
		return // unread bytes left, or the read loop is filling this very chunk
	}
	bp.Put(h.buf)
	copy(q.chunks, q.chunks[1:])
	q.chunks[len(q.chunks)-1] = chunk{}
	q.chunks = q.chunks[:len(q.chunks)-1]
	q.off = 0
}

// release recycles every chunk now, or marks the queue so that the last copier does. It returns the number of
// unread bytes thrown away (for the connection's flow-control window).
func (q *recvQueue) release(bp *bufPool) int {
	q.dead = true
	dropped := q.size
	q.size = 0
	if q.busy || q.filling {
		return dropped
	}
	for i := range q.chunks {
		bp.Put(q.chunks[i].buf)
		q.chunks[i] = chunk{}
	}
	q.chunks = nil
	q.off = 0
	return dropped
}

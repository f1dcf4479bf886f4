package main

import (
	"fmt"
	"net"
	"os"
	"sync"
)

// The descriptors the supervisor hands every plugin (docs/protocol.md).
const (
	pluginFD = 3 // the plugin serves HTTP/2 here
	hostFD   = 4 // the plugin is an HTTP/2 client of the host here
)

// inherited wraps an inherited connected socket as a net.Conn.
func inherited(fd uintptr) (*watchedConn, error) {
	f := os.NewFile(fd, fmt.Sprintf("fd %d", fd))
	if f == nil {
		return nil, fmt.Errorf("fd %d is not open", fd)
	}
	// FileConn duplicates the descriptor (F_DUPFD_CLOEXEC): no socket of our own.
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("fd %d: %w", fd, err)
	}
	return &watchedConn{Conn: conn, closed: make(chan struct{})}, nil
}

// watchedConn says when gRPC closes it: on fd 3 that is the end of the
// only connection the supervisor ever opens.
type watchedConn struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *watchedConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// oneConn is a listener for grpc.Server.Serve that hands out the one
// connection it holds, then blocks until the server closes it: there is no
// listening socket.
type oneConn struct {
	conns  chan net.Conn
	addr   net.Addr
	once   sync.Once
	closed chan struct{}
}

func listenerFor(c net.Conn) *oneConn {
	l := &oneConn{conns: make(chan net.Conn, 1), addr: c.LocalAddr(), closed: make(chan struct{})}
	l.conns <- c
	return l
}

func (l *oneConn) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConn) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.addr }

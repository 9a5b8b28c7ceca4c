//go:build !linux

package evloop

import (
	"errors"
	"net"
)

// Handler is as on Linux; without epoll there is no loop to run it.
type Handler func(c *Conn, data []byte) int

// Loop is never made off Linux.
type Loop struct{}

// Conn is never made off Linux.
type Conn struct {
	net.Conn
	Context any
}

// New reports that the loop needs Linux.
func New(Handler) (*Loop, error) { return nil, errors.New("the event loop needs Linux (epoll)") }

func (l *Loop) Adopt(tc *net.TCPConn) (*Conn, error) { return nil, errors.ErrUnsupported }
func (l *Loop) Close()                               {}
func (c *Conn) AtBoundary()                          {}
func (c *Conn) Backlogged() bool                     { return false }
func (c *Conn) WriteNoWait(p []byte) (int, error)    { return c.Write(p) }
func (c *Conn) Hold()                                {}
func (c *Conn) Release()                             {}
func (l *Loop) OnTurn(func() int)                    {}
func (l *Loop) Post(func())                          {}
func (l *Loop) Watch(int, func(uint32)) error        { return errors.ErrUnsupported }
func (l *Loop) Forget(int)                           {}

// Readable and Writable are as on Linux.
const (
	Readable uint32 = 1
	Writable uint32 = 4
)

// ErrWriteBusy is as on Linux.
var ErrWriteBusy = errors.New("evloop: a write is under way")

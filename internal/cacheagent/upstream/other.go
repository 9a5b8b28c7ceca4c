//go:build !unix

package upstream

import (
	"context"
	"errors"
	"time"
)

// Callback is as on unix systems; without them there is no loop to own a connection.
type Callback interface {
	Reply(reply []byte, err error)
}

// Conn is never made without unix.
type Conn struct{}

func New(int) *Conn                                   { return &Conn{} }
func (c *Conn) Fd() int                               { return -1 }
func (c *Conn) Err() error                            { return errors.ErrUnsupported }
func (c *Conn) Pending() int                          { return 0 }
func (c *Conn) Send(Callback, []byte)                 {}
func (c *Conn) Pushes() uint64                        { return 0 }
func (c *Conn) Out() []byte                           { return nil }
func (c *Conn) SetOut([]byte)                         {}
func (c *Conn) Expect(Callback)                       {}
func (c *Conn) Flush() error                          { return errors.ErrUnsupported }
func (c *Conn) OnReadable() error                     { return errors.ErrUnsupported }
func (c *Conn) Stalled(time.Time, time.Duration) bool { return false }
func (c *Conn) Fail(error)                            {}
func CloseFd(int)                                     {}

// Dial reports that the connection needs unix.
func Dial(context.Context, string, string, time.Duration) (int, error) {
	return -1, errors.ErrUnsupported
}

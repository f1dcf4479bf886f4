package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"goecho/internal/hostpb"
)

// hostLog streams records to plugin.host.v1.Host/Log on fd 4 and never
// blocks the plugin: records wait in a bounded buffer, and what does not fit
// is dropped and counted in the next record's dropped_before.
type hostLog struct {
	records chan *hostpb.LogRecord
	dropped atomic.Uint64
	stop    chan struct{}
	once    sync.Once
	done    chan struct{}
}

// The buffer the Rust SDK keeps too.
const logBuffer = 4096

// How long to wait for the supervisor's answer after the last record, so
// that it has read them all before the process exits.
const logFlush = 500 * time.Millisecond

func dialHost() *hostLog {
	l := &hostLog{
		records: make(chan *hostpb.LogRecord, logBuffer),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go l.run()
	return l
}

func (l *hostLog) Info(msg string, fields map[string]string) {
	l.log(hostpb.Level_LEVEL_INFO, msg, fields)
}

func (l *hostLog) Warn(msg string, fields map[string]string) {
	l.log(hostpb.Level_LEVEL_WARN, msg, fields)
}

func (l *hostLog) Error(msg string, fields map[string]string) {
	l.log(hostpb.Level_LEVEL_ERROR, msg, fields)
}

func (l *hostLog) log(level hostpb.Level, msg string, fields map[string]string) {
	rec := &hostpb.LogRecord{
		UnixNanos: uint64(time.Now().UnixNano()),
		Level:     level,
		Target:    "go_echo",
		Message:   msg,
		Fields:    fields,
	}
	select {
	case l.records <- rec:
	default:
		l.dropped.Add(1)
	}
}

// Close sends what is buffered and ends the stream, waiting a bounded time:
// a host that never answered must not keep the plugin from exiting. Records
// logged after it are lost.
func (l *hostLog) Close() {
	l.once.Do(func() { close(l.stop) })
	select {
	case <-l.done:
	case <-time.After(2 * logFlush):
	}
}

func (l *hostLog) run() {
	defer close(l.done)
	stream, err := openLog()
	if err != nil {
		fmt.Fprintf(os.Stderr, "no host log service on fd %d (%v): logging to stderr\n", hostFD, err)
	}
	send := func(rec *hostpb.LogRecord) {
		rec.DroppedBefore = l.dropped.Swap(0)
		if stream != nil {
			if stream.Send(rec) == nil {
				return
			}
			stream = nil
		}
		fmt.Fprintf(os.Stderr, "%s %s %v\n", rec.Level, rec.Message, rec.Fields)
	}
	for {
		select {
		case rec := <-l.records:
			send(rec)
		case <-l.stop:
			// Only this goroutine receives, so a non-empty buffer never blocks it.
			for len(l.records) > 0 {
				send(<-l.records)
			}
			if stream != nil {
				answered := make(chan struct{})
				go func() {
					stream.CloseAndRecv()
					close(answered)
				}()
				select {
				case <-answered:
				case <-time.After(logFlush):
				}
			}
			return
		}
	}
}

// openLog opens the log stream over the already connected fd 4: the
// "dialer" hands gRPC that connection once and has nothing to redial.
func openLog() (hostpb.Host_LogClient, error) {
	conn, err := inherited(hostFD)
	if err != nil {
		return nil, err
	}
	var used atomic.Bool
	dial := func(context.Context, string) (net.Conn, error) {
		if used.Swap(true) {
			return nil, errors.New("the host connection on fd 4 is gone")
		}
		return conn, nil
	}
	cc, err := grpc.Dial("passthrough:///host", grpc.WithInsecure(), grpc.WithContextDialer(dial))
	if err != nil {
		return nil, err
	}
	return hostpb.NewHostClient(cc).Log(context.Background())
}

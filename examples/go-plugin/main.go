// Command go-echo is a plugin for plugin-supervisor written in Go. It serves
// echo.v1.Echo, the lifecycle contract and grpc.health.v1 on the connected
// socket the supervisor hands it as fd 3, and sends its logs to the host's
// log service on fd 4, as docs/protocol.md says. build.sh beside it builds
// it from Debian's Go packages.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"goecho/internal/echopb"
	"goecho/internal/pluginpb"
)

const (
	name    = "go-echo"
	version = "1.0.0"
	// The Rust SDK release whose protocol (version 1) this plugin speaks.
	sdkVersion = "0.1.0"
	cookie     = "9d3e2f6a-plugin-supervisor-v1"
	// What a signal gives the drain, as the Rust SDK does.
	signalDrain = 5 * time.Second
)

func main() {
	if os.Getenv("PLUGIN_SUPERVISOR_COOKIE") != cookie {
		fmt.Fprintf(os.Stderr, "%s is a plugin for plugin-supervisor: it serves gRPC on a socket the supervisor hands it, so it is started by the supervisor, not by hand (add it to the supervisor's config and use `supervisorctl status`)\n", name)
		os.Exit(1)
	}
	// Asked for before anything can send one: every disposition starts at its default.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)

	logs := dialHost()
	conn, err := inherited(pluginFD)
	if err != nil {
		fatal(logs, "fd 3 is not the supervisor's connection", err)
	}

	descriptors, services, err := contract(echopb.File_echo_proto)
	if err != nil {
		fatal(logs, "cannot encode the contract", err)
	}
	calls := &inFlight{}
	server := grpc.NewServer(
		grpc.ChainUnaryInterceptor(calls.unary),
		grpc.ChainStreamInterceptor(calls.stream),
	)
	healthServer := health.NewServer()
	for _, s := range services {
		healthServer.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	draining := make(chan struct{})
	shutdowns := make(chan time.Duration, 1)
	pluginpb.RegisterPluginLifecycleServer(server, &lifecycle{
		services:    services,
		descriptors: descriptors,
		calls:       calls,
		shutdowns:   shutdowns,
		logs:        logs,
	})
	healthpb.RegisterHealthServer(server, &drainingHealth{Server: healthServer, draining: draining})
	echopb.RegisterEchoServer(server, &echo{logs: logs})

	go func() {
		if err := server.Serve(listenerFor(conn)); err != nil {
			logs.Error("serving fd 3 failed", map[string]string{"error": err.Error()})
		}
	}()

	var deadline time.Duration
	var reason string
	select {
	case d := <-shutdowns:
		deadline, reason = d, "shutdown call"
	case s := <-signals:
		deadline, reason = signalDrain, s.String()
	case <-conn.closed:
		// Nobody can call or stop this process any more: leave at once.
		deadline, reason = 0, "fd 3 closed"
	}
	logs.Info("draining", map[string]string{"reason": reason, "deadline": deadline.String(), "in_flight": fmt.Sprint(calls.count())})
	healthServer.Shutdown()
	close(draining)
	if drain(server, deadline) {
		logs.Info("drained", nil)
	} else {
		logs.Warn("drain deadline passed; exiting with calls in flight", map[string]string{"in_flight": fmt.Sprint(calls.count())})
	}
	logs.Close()
}

// fatal says why the plugin cannot start, on stderr too (the host may be
// why), and exits 1.
func fatal(logs *hostLog, msg string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %s: %v\n", name, msg, err)
	logs.Error(msg, map[string]string{"error": err.Error()})
	logs.Close()
	os.Exit(1)
}

// drain stops taking calls (GOAWAY) and waits for those in flight, at most
// deadline; reports whether they all finished.
func drain(server *grpc.Server, deadline time.Duration) bool {
	done := make(chan struct{})
	go func() {
		server.GracefulStop()
		close(done)
	}()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-done:
		return true
	case <-timer.C:
		// Not server.Stop: it waits for a connection still in its HTTP/2
		// handshake. Exiting ends whatever is left.
		return false
	}
}

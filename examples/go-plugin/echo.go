package main

import (
	"context"
	"fmt"

	"goecho/internal/echopb"
)

// echo serves echo.v1.Echo: the message comes back as it was sent.
type echo struct {
	echopb.UnimplementedEchoServer
	logs *hostLog
}

func (e *echo) Echo(_ context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	e.logs.Info("echoed", map[string]string{"bytes": fmt.Sprint(len(req.Message))})
	return &echopb.EchoResponse{Message: req.Message}, nil
}

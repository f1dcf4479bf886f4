package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"goecho/internal/pluginpb"
)

// The protocol versions this plugin speaks.
var protocols = []uint32{1}

// lifecycle serves plugin.v1.PluginLifecycle: the handshake declaring the
// contract, the config at init, and the request to drain.
type lifecycle struct {
	pluginpb.UnimplementedPluginLifecycleServer
	services    []string
	descriptors []byte
	calls       *inFlight
	shutdowns   chan<- time.Duration
	logs        *hostLog
}

func (l *lifecycle) Handshake(_ context.Context, req *pluginpb.HandshakeRequest) (*pluginpb.HandshakeResponse, error) {
	var chosen uint32
	for _, offered := range req.ProtocolVersions {
		for _, spoken := range protocols {
			if offered == spoken && offered > chosen {
				chosen = offered
			}
		}
	}
	if chosen == 0 {
		return nil, status.Errorf(codes.FailedPrecondition,
			"no common protocol version: the supervisor offers %v, plugin %s (sdk %s) speaks %v",
			req.ProtocolVersions, name, sdkVersion, protocols)
	}
	return &pluginpb.HandshakeResponse{
		Name:              name,
		Version:           version,
		SdkVersion:        sdkVersion,
		ProtocolVersion:   chosen,
		Services:          l.services,
		FileDescriptorSet: l.descriptors,
	}, nil
}

func (l *lifecycle) Init(_ context.Context, req *pluginpb.InitRequest) (*pluginpb.InitResponse, error) {
	config := map[string]interface{}{}
	if req.ConfigJson != "" {
		if err := json.Unmarshal([]byte(req.ConfigJson), &config); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "plugin config is not a JSON object: %v", err)
		}
	}
	l.logs.Info("configured", map[string]string{
		"instance": req.Instance,
		"config":   req.ConfigJson,
		"data_dir": req.DataDir,
	})
	return &pluginpb.InitResponse{}, nil
}

func (l *lifecycle) Shutdown(_ context.Context, req *pluginpb.ShutdownRequest) (*pluginpb.ShutdownResponse, error) {
	select {
	case l.shutdowns <- time.Duration(req.DrainDeadlineMs) * time.Millisecond:
	default: // a drain is already under way
	}
	return &pluginpb.ShutdownResponse{InFlight: uint32(l.calls.count())}, nil
}

// contract is what the handshake declares: the services of files and an
// encoded FileDescriptorSet of them with all their imports, each file after
// those it imports.
func contract(files ...protoreflect.FileDescriptor) ([]byte, []string, error) {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := 0; i < f.Imports().Len(); i++ {
			add(f.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	var services []string
	for _, f := range files {
		add(f)
		for i := 0; i < f.Services().Len(); i++ {
			services = append(services, string(f.Services().Get(i).FullName()))
		}
	}
	encoded, err := proto.Marshal(set)
	if err != nil {
		return nil, nil, fmt.Errorf("encode the descriptor set: %w", err)
	}
	return encoded, services, nil
}

// inFlight counts the calls to the plugin's own services: the ones a drain
// waits for (the lifecycle and health calls are the supervisor's own).
type inFlight struct{ n atomic.Int64 }

func (c *inFlight) count() int64 { return c.n.Load() }

func (c *inFlight) track(method string) func() {
	if strings.HasPrefix(method, "/plugin.v1.PluginLifecycle/") || strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return func() {}
	}
	c.n.Add(1)
	return func() { c.n.Add(-1) }
}

func (c *inFlight) unary(ctx context.Context, req interface{}, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (interface{}, error) {
	defer c.track(info.FullMethod)()
	return handler(ctx, req)
}

func (c *inFlight) stream(srv interface{}, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	defer c.track(info.FullMethod)()
	return handler(srv, ss)
}

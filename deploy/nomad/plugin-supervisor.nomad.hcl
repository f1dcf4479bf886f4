# One plugin-supervisor per Nomad client, as a system job: the same image,
# command, config, host directories and checks as the Kubernetes DaemonSet
# (deploy/kubernetes/daemonset.yaml, which says why each is needed). Run it
# with `nomad job run deploy/nomad/plugin-supervisor.nomad.hcl` (README.md,
# "Across a fleet").
#
# The docker driver, not exec: the supervisor needs a writable cgroup v2
# subtree of its own, which Docker gives a privileged container in its own
# cgroup namespace (Docker's default on cgroup v2 hosts); exec would run it
# inside Nomad's own cgroup for the task and without the image's policies at
# their path. Each client's docker plugin must allow what the job asks:
#
#   plugin "docker" {
#     config {
#       allow_privileged = true
#       volumes {
#         enabled = true
#       }
#     }
#   }
#
# The checks are Consul script checks (Nomad's own service provider has only
# HTTP and TCP checks): without Consul, drop the service block, and the
# update waits on the task's state alone.
job "plugin-supervisor" {
  type        = "system"
  datacenters = ["*"]

  # A config or image change replaces the allocations one client at a time;
  # the next goes once the new one's checks have passed for min_healthy_time
  # (every plugin instance running and serving).
  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "30s"
    healthy_deadline = "5m"
  }

  group "plugin-supervisor" {
    network {
      port "metrics" {
        static = 9464
      }
    }

    service {
      name     = "plugin-supervisor-metrics"
      provider = "consul"
      port     = "metrics"
      # For a Prometheus that discovers targets in Consul by this tag.
      tags = ["prometheus"]
      meta {
        metrics_path = "/metrics"
      }

      # Ready: `supervisorctl status` exits 0 only when every plugin instance
      # runs and serves (3 otherwise; 1 or 5 when the daemon does not answer).
      check {
        name     = "ready"
        type     = "script"
        task     = "supervisor"
        command  = "supervisorctl"
        args     = ["--wait", "5s", "status"]
        interval = "10s"
        timeout  = "10s"
      }

      # Alive: the daemon answers (0 or 3), whatever its plugins do; three
      # failures in a row restart the task.
      check {
        name     = "alive"
        type     = "script"
        task     = "supervisor"
        command  = "/bin/sh"
        args     = ["-c", "supervisorctl --wait 5s status >/dev/null; rc=$?; [ \"$rc\" -eq 0 ] || [ \"$rc\" -eq 3 ]"]
        interval = "20s"
        timeout  = "10s"

        check_restart {
          limit = 3
          grace = "2m"
        }
      }
    }

    task "supervisor" {
      driver = "docker"
      # SIGTERM to the daemon, which drains and stops every plugin first. As the
      # container's process 1 it is its own init (it reaps orphans and forwards
      # signals to the daemon it forks): the job needs no `init = true`.
      kill_signal  = "SIGTERM"
      kill_timeout = "60s"

      config {
        image      = "registry.example.com/plugin-supervisor:0.1.0-plugins.1"
        entrypoint = ["/usr/bin/plugin-supervisor"]
        args       = ["--config", "/etc/plugin-supervisor/config.toml"]
        privileged = true
        ports      = ["metrics"]
        # The rendered config at the package's path (relative: in the task
        # directory), and the host's runtime directory (gateway.sock for
        # host applications and other tasks) and state directory (created
        # when missing).
        volumes = [
          "local/config.toml:/etc/plugin-supervisor/config.toml:ro",
          "/run/plugin-supervisor:/run/plugin-supervisor",
          "/var/lib/plugin-supervisor:/var/lib/plugin-supervisor",
        ]
      }

      env {
        PLUGIN_SUPERVISOR_LOG_FORMAT = "json"
      }

      # Part of the job: an edit is a new job version, rolled out as above.
      template {
        destination = "local/config.toml"
        change_mode = "restart"
        data        = <<-EOT
          # The fleet's configuration, the same settings as deploy/kubernetes/config.toml
          # (the tests hold them equal): every client's supervisor runs it, from
          # local/config.toml, bound at /etc/plugin-supervisor/config.toml.
          [supervisor]
          # A host directory, so host applications and other tasks reach gateway.sock.
          runtime_dir = "/run/plugin-supervisor"
          control_socket_mode = "0600"
          # Callers in other containers connect as their own uids (they share the host's);
          # which of them may call which plugin is each plugin's `callers` key.
          gateway_socket_mode = "0666"
          # Baked into the image by the Debian package.
          policies_dir = "/etc/plugin-supervisor/policies"
          # A host directory too: quota overrides, stops and rollouts survive a new allocation.
          state_dir = "/var/lib/plugin-supervisor"
          # Every address of the container: the job maps it to the client's port 9464,
          # which Prometheus finds through Consul. Firewall it as your other exporters.
          metrics_listen = "0.0.0.0:9464"

          [supervisor.cgroup]
          # Beneath the container's cgroup (its cgroup namespace's root); the daemon
          # moves itself into the subtree's `supervisor` leaf (and its init, process 1,
          # into `plugin-supervisor-init`) so that the container's cgroup can enable
          # the controllers (cgroup v2's no-internal-processes rule).
          name = "plugin-supervisor"
          move_self = true

          [supervisor.defaults]
          stop_timeout = "5s"
          restart = "on-failure"
          tier = "L1"

          # Plugins come from a derived image (README.md, "Across a fleet"), installed
          # under /usr/local/lib/plugin-supervisor/plugins/.
          [[plugin]]
          name = "echo"
          binary = "/usr/local/lib/plugin-supervisor/plugins/echo"
          replicas = 2
          # callers = ["gid:echo-callers"]

          [plugin.quota]
          memory_max = "128M"
          cpu = "50%"
          pids_max = 32

          # A change to this plugin on a running supervisor (`supervisorctl update` or
          # `reload`) reaches that node's callers as a canary, judged on the node's own
          # calls (README.md, "Canary rollout").
          [plugin.rollout]
          strategy = "canary"
          steps = [5, 25, 50, 100]
          step_interval = "60s"
        EOT
      }

      # Nomad's memory is the container's hard limit, and the plugins' cgroups
      # are beneath the container's: give the daemon (about 64 MB) plus the
      # sum of the plugins' memory_max (2 x 128M for echo here).
      resources {
        cpu    = 200
        memory = 384
      }
    }
  }
}

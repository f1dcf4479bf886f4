//! The zoo plugin: misbehaves on request so tests can show the supervisor
//! containing each misbehaviour. Flags change how it presents itself:
//! `--name NAME` (declared name), `--protocol N` (offered protocol),
//! `--hang` (never answers), `--exit CODE` (dies before serving),
//! `--die-after-ms MS` (serves, then exits with 3), `--init-fail MSG`
//! (refuses its config), `--version V`, `--fail-every N` (every Nth `Echo`
//! fails with INTERNAL), `--echo-delay-ms MS` (each `Echo` answers that late),
//! `--not-serving` (its health check says NOT_SERVING), `--usr1-serves` (says
//! SERVING again on SIGUSR1, after a `SetServing` said otherwise), `--start-delay-ms MS` (waits
//! that long before its handshake), `--flood stdout|stderr|sdk`
//! (writes log lines to that stream as fast as it can, for ever, from a thread of its
//! own, while it serves). Leaks, from the start:
//! `--leak-memory KIB_PER_SEC`, `--leak-fds N_PER_SEC`, `--leak-tasks N_PER_SEC`,
//! `--sawtooth KIB_PER_SEC:PERIOD_MS` (memory kept, then freed, each period),
//! `--step KIB:DELAY_MS` (memory touched once, after the delay, and kept). `CallHost`
//! calls through the host channel.

use std::time::Duration;

use plugin_sdk::tonic::{Request, Response, Status, Streaming};

mod pb {
    include!(concat!(env!("OUT_DIR"), "/zoo.v1.rs"));
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/zoo.binpb"));
}

use pb::zoo_server::{Zoo, ZooServer};
use pb::*;

#[derive(Default)]
struct ZooService {
    /// Every this-many-th `Echo` fails (0: none).
    fail_every: u64,
    echo_delay: Duration,
    /// `Sleep` blocks the plugin's one thread instead of waiting on a timer: until it wakes
    /// the plugin reads nothing, its connection to the supervisor included (a plugin stuck
    /// in a handler).
    blocking_sleep: bool,
    echoes: std::sync::atomic::AtomicU64,
    host: plugin_sdk::HostChannel,
    /// The plugin's health and shutdown signal (set in main, once the plugin exists).
    health: Option<plugin_sdk::Health>,
    shutdown: Option<plugin_sdk::ShutdownSignal>,
}

/// A `log` logger that says nothing.
struct Quiet;

impl log::Log for Quiet {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        false
    }
    fn log(&self, _: &log::Record<'_>) {}
    fn flush(&self) {}
}

static QUIET: Quiet = Quiet;

/// Descriptors open when main() began.
static INHERITED: std::sync::OnceLock<Vec<i32>> = std::sync::OnceLock::new();

/// Probes every descriptor number up to past the exec descriptor (1000)
/// with F_GETFD, which needs no /proc (Landlock hides it).
fn inherited_fds() -> Vec<i32> {
    // SAFETY: F_GETFD only reads a descriptor's flags; closed ones give EBADF.
    (0..1100).filter(|fd| unsafe { libc::fcntl(*fd, libc::F_GETFD) } >= 0).collect()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Makes the named system call; the point is what the sandbox does to it.
fn syscall(name: &str, pid: i32, path: &str) -> Result<(i64, i32), Status> {
    // SAFETY: each call below is made with arguments that cannot corrupt
    // this process's memory; what matters is whether the kernel allows it.
    let r: i64 = unsafe {
        match name {
            "getpid" => libc::getpid() as i64,
            // The descriptor flags of fd `pid` (FD_CLOEXEC is 1).
            "getfd" => libc::fcntl(pid, libc::F_GETFD) as i64,
            "ptrace" => libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0),
            "mount" => libc::mount(c"none".as_ptr(), c"/mnt".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) as i64,
            "socket" => libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as i64,
            // System V IPC objects outlive the process that made them.
            "shmget" => libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) as i64,
            "semget" => libc::semget(libc::IPC_PRIVATE, 1, libc::IPC_CREAT | 0o600) as i64,
            "msgget" => libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) as i64,
            "socketpair" => {
                let mut fds = [0; 2];
                libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) as i64
            }
            "execve" => {
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), envp.as_ptr()) as i64
            }
            // The spawn's exec rule (fd 1000, AT_EMPTY_PATH) with an absolute path, whose
            // descriptor the kernel ignores: a program of the plugin's own choosing.
            "execveat_path" => {
                let Ok(program) = std::ffi::CString::new(path) else {
                    return Err(Status::invalid_argument("a path with NUL"));
                };
                let argv = [program.as_ptr(), std::ptr::null()];
                let envp: [*const libc::c_char; 1] = [std::ptr::null()];
                libc::syscall(
                    libc::SYS_execveat,
                    1000,
                    program.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                    libc::AT_EMPTY_PATH,
                )
            }
            "mmap_wx" => {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED { -1 } else { 0 }
            }
            "unshare" => libc::unshare(libc::CLONE_NEWUSER) as i64,
            "kill_init" => libc::kill(1, 0) as i64,
            "kill" => libc::kill(pid, libc::SIGKILL) as i64,
            "ptrace_attach" => libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0),
            "connect_unix" => {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    -1
                } else {
                    let mut addr: libc::sockaddr_un = std::mem::zeroed();
                    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
                    for (d, s) in addr.sun_path.iter_mut().zip(path.bytes().take(107)) {
                        *d = s as libc::c_char;
                    }
                    let r =
                        libc::connect(fd, (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_un>() as u32);
                    let e = *libc::__errno_location();
                    libc::close(fd);
                    *libc::__errno_location() = e;
                    r as i64
                }
            }
            "connect_abstract" => connect_abstract(path.as_bytes()),
            "bpf" => libc::syscall(libc::SYS_bpf, 0, 0, 0),
            "reboot" => libc::syscall(libc::SYS_reboot, 0, 0, 0, 0),
            "init_module" => libc::syscall(libc::SYS_init_module, 0, 0, 0),
            "x32_getpid" => libc::syscall(0x4000_0000 | libc::SYS_getpid),
            "int80_getpid" => {
                let mut ret: i64 = 20; // __NR_getpid on i386
                std::arch::asm!("int 0x80", inout("rax") ret, options(nostack));
                ret
            }
            other => {
                return Err(Status::invalid_argument(format!("zoo knows no syscall {other:?}")));
            }
        }
    };
    Ok((r, if r < 0 { errno() } else { 0 }))
}

/// Connects to the abstract unix socket `name` (given without its leading
/// NUL): such names are no files, so filesystem rules do not see them.
///
/// # Safety
/// Plain syscalls on a socket this function owns.
unsafe fn connect_abstract(name: &[u8]) -> i64 {
    // SAFETY: socket/connect/close on a descriptor made here, with an
    // address built on the stack and its exact length.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return -1;
        }
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let name = &name[..name.len().min(addr.sun_path.len() - 1)];
        for (d, s) in addr.sun_path[1..].iter_mut().zip(name) {
            *d = *s as libc::c_char;
        }
        // An abstract name is exactly this long: no terminating NUL.
        let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
        let r = libc::connect(fd, (&raw const addr).cast(), len as libc::socklen_t);
        let e = *libc::__errno_location();
        libc::close(fd);
        *libc::__errno_location() = e;
        r as i64
    }
}

/// Streaming handlers begun, finished and cancelled, for `Tally`.
static TALLY: [std::sync::atomic::AtomicU64; 3] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// One streaming handler's life: cancelled if it is dropped before it finished (its
/// caller went away, or its stream was reset), which is what the tests of cancellation
/// look for, in `Tally` and in the plugin's log.
struct Handler {
    method: &'static str,
    finished: bool,
}

impl Handler {
    fn begin(method: &'static str) -> Self {
        TALLY[0].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self { method, finished: false }
    }

    fn finish(mut self) {
        self.finished = true;
        TALLY[1].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        if !self.finished {
            TALLY[2].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            println!("zoo: {} handler cancelled", self.method);
        }
    }
}

type CountStream =
    std::pin::Pin<Box<dyn plugin_sdk::tonic::codegen::tokio_stream::Stream<Item = Result<Text, Status>> + Send>>;

#[plugin_sdk::tonic::async_trait]
impl Zoo for ZooService {
    type CountStream = CountStream;

    async fn count(&self, req: Request<CountRequest>) -> Result<Response<CountStream>, Status> {
        let r = req.into_inner();
        let handler = Handler::begin("Count");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Heard only when asked to: otherwise a signal that never fires.
        let shutdown = self.shutdown.clone().filter(|_| r.until_shutdown);
        let drained = async move {
            match shutdown {
                Some(s) => s.requested().await,
                None => std::future::pending().await,
            }
        };
        tokio::spawn(async move {
            tokio::pin!(drained);
            for i in 0..r.count {
                if i > 0 && r.interval_ms > 0 {
                    // A caller gone meanwhile is noticed at once, not at the next message.
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(u64::from(r.interval_ms))) => {}
                        () = tx.closed() => return,
                        drain = &mut drained => {
                            let last = Text { text: format!("drained: {}", drain.reason) };
                            if tx.send(Ok(last)).await.is_ok() {
                                handler.finish();
                            }
                            return;
                        }
                    }
                }
                if tx.send(Ok(Text { text: format!("{} {i}", r.text) })).await.is_err() {
                    return;
                }
            }
            handler.finish();
        });
        let stream = plugin_sdk::tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn collect(&self, req: Request<Streaming<Text>>) -> Result<Response<Text>, Status> {
        let handler = Handler::begin("Collect");
        let mut input = req.into_inner();
        let mut texts = Vec::new();
        // An error (the stream reset) or this future dropped leaves the handler cancelled.
        while let Some(t) = input.message().await? {
            texts.push(t.text);
        }
        handler.finish();
        Ok(Response::new(Text { text: texts.join(" ") }))
    }

    type ChatStream = CountStream;

    async fn chat(&self, req: Request<Streaming<Text>>) -> Result<Response<CountStream>, Status> {
        let handler = Handler::begin("Chat");
        let mut input = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = input.message() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(Some(t)) => {
                        if tx.send(Ok(Text { text: format!("{}!", t.text) })).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            handler.finish();
        });
        let stream = plugin_sdk::tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn tally(&self, _req: Request<Text>) -> Result<Response<StreamTally>, Status> {
        use std::sync::atomic::Ordering::SeqCst;
        Ok(Response::new(StreamTally {
            started: TALLY[0].load(SeqCst),
            finished: TALLY[1].load(SeqCst),
            cancelled: TALLY[2].load(SeqCst),
        }))
    }

    async fn call_host(&self, req: Request<CallHostRequest>) -> Result<Response<Text>, Status> {
        let req = req.into_inner();
        let text = if req.service == "echo" {
            use plugin_integration::pb::echo::{EchoRequest, echo_client::EchoClient};
            let mut client = EchoClient::new(self.host.clone());
            client.echo(EchoRequest { message: req.text }).await?.into_inner().message
        } else {
            let mut call = Request::new(Text { text: req.text });
            if !req.plugin.is_empty() {
                let name = req.plugin.parse().map_err(|_| Status::invalid_argument("plugin: not a header value"))?;
                call.metadata_mut().insert("x-plugin", name);
            }
            pb::zoo_client::ZooClient::new(self.host.clone()).echo(call).await?.into_inner().text
        };
        Ok(Response::new(Text { text }))
    }

    async fn set_serving(&self, req: Request<ServingRequest>) -> Result<Response<ServingResponse>, Status> {
        let health = self.health.as_ref().ok_or_else(|| Status::internal("the zoo has no health handle"))?;
        health.set_serving(req.into_inner().serving).await;
        Ok(Response::new(ServingResponse { pid: std::process::id() }))
    }

    async fn echo(&self, req: Request<Text>) -> Result<Response<Text>, Status> {
        // Asked, it says the deadline its call came with instead (for the host channel's
        // deadline test).
        if req.get_ref().text == "grpc-timeout?" {
            let seen = req.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).unwrap_or("none");
            return Ok(Response::new(Text { text: seen.to_owned() }));
        }
        if !self.echo_delay.is_zero() {
            tokio::time::sleep(self.echo_delay).await;
        }
        let n = self.echoes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if self.fail_every > 0 && n.is_multiple_of(self.fail_every) {
            return Err(Status::internal(format!("echo {n} failed on purpose (--fail-every {})", self.fail_every)));
        }
        Ok(Response::new(req.into_inner()))
    }

    async fn panic(&self, req: Request<Text>) -> Result<Response<Text>, Status> {
        panic!("zoo was asked to panic: {}", req.into_inner().text);
    }

    async fn sleep(&self, req: Request<SleepRequest>) -> Result<Response<Text>, Status> {
        let ms = req.into_inner().ms;
        // What a test waits for to know the call is in flight.
        plugin_sdk::tracing::info!(ms, "sleeping");
        if self.blocking_sleep {
            std::thread::sleep(Duration::from_millis(u64::from(ms)));
        } else {
            tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
        }
        Ok(Response::new(Text { text: format!("slept {ms}ms") }))
    }

    async fn alloc(&self, req: Request<AllocRequest>) -> Result<Response<Text>, Status> {
        let mib = req.into_inner().mib;
        // Kept for the life of the process: this is a memory hog.
        plugin_integration::hog::hold_mib(mib);
        Ok(Response::new(Text { text: format!("holding {mib} MiB more") }))
    }

    async fn spin(&self, req: Request<SpinRequest>) -> Result<Response<Text>, Status> {
        let r = req.into_inner();
        for _ in 0..r.threads.max(1) {
            let ms = r.ms;
            std::thread::spawn(move || {
                let end = std::time::Instant::now() + Duration::from_millis(u64::from(ms));
                let mut x = 0u64;
                while std::time::Instant::now() < end {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        Ok(Response::new(Text { text: "spinning".into() }))
    }

    async fn fork_bomb(&self, req: Request<ForkBombRequest>) -> Result<Response<ForkBombResponse>, Status> {
        let max = req.into_inner().max;
        let mut forked = 0;
        let mut err = 0;
        for _ in 0..max {
            // SAFETY: the child only calls async-signal-safe functions
            // (pause, _exit) before it is killed.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                loop {
                    // SAFETY: async-signal-safe.
                    unsafe { libc::pause() };
                }
            }
            if pid < 0 {
                err = errno();
                break;
            }
            forked += 1;
        }
        Ok(Response::new(ForkBombResponse { forked, errno: err }))
    }

    async fn syscall(&self, req: Request<SyscallRequest>) -> Result<Response<SyscallResponse>, Status> {
        let r = req.into_inner();
        if r.name == "stuck_blocking" {
            // Not a system call: a blocking job that outlives any drain (a read of a hung
            // file, say), which the plugin's exit must not wait for.
            drop(tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_secs(120))));
            return Ok(Response::new(SyscallResponse { result: 0, errno: 0 }));
        }
        if r.name == "brief_blocking" {
            // A blocking job about to end when the plugin drains (a write being
            // flushed): the plugin's exit waits for it, and it says so on stderr.
            // Answered once it runs: a job still queued when the runtime shuts down is
            // dropped, not waited for.
            let (started, running) = tokio::sync::oneshot::channel();
            drop(tokio::task::spawn_blocking(move || {
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(200));
                eprintln!("zoo: the brief blocking job ended");
            }));
            let _ = running.await;
            return Ok(Response::new(SyscallResponse { result: 0, errno: 0 }));
        }
        let (result, errno) = syscall(&r.name, r.pid, &r.path)?;
        Ok(Response::new(SyscallResponse { result, errno }))
    }

    async fn read_file(&self, req: Request<ReadFileRequest>) -> Result<Response<ReadFileResponse>, Status> {
        let path = req.into_inner().path;
        Ok(Response::new(match std::fs::read_to_string(&path) {
            Ok(content) => ReadFileResponse { ok: true, errno: 0, content },
            Err(e) => ReadFileResponse { ok: false, errno: e.raw_os_error().unwrap_or(0), content: e.to_string() },
        }))
    }

    async fn escape(&self, _req: Request<Text>) -> Result<Response<EscapeResponse>, Status> {
        let mut fds = [0; 2];
        // SAFETY: pipe into a local array; fork children only use
        // async-signal-safe calls (setsid, fork, write, pause, _exit).
        let pid = unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return Err(Status::internal("pipe failed"));
            }
            let child = libc::fork();
            if child == 0 {
                libc::setsid();
                let grandchild = libc::fork();
                if grandchild == 0 {
                    let me = libc::getpid();
                    libc::write(fds[1], (&me as *const i32).cast(), 4);
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0);
            }
            libc::waitpid(child, std::ptr::null_mut(), 0);
            let mut pid: i32 = 0;
            libc::read(fds[0], (&mut pid as *mut i32).cast(), 4);
            libc::close(fds[0]);
            libc::close(fds[1]);
            pid
        };
        Ok(Response::new(EscapeResponse { pid: pid as u32 }))
    }

    async fn inherited_fds(&self, _req: Request<Text>) -> Result<Response<Fds>, Status> {
        Ok(Response::new(Fds { fds: INHERITED.get().cloned().unwrap_or_default() }))
    }

    async fn print(&self, req: Request<PrintRequest>) -> Result<Response<Text>, Status> {
        let r = req.into_inner();
        for i in 0..r.lines {
            println!("{} {i}", r.text);
            eprintln!("{} {i} (stderr)", r.text);
        }
        plugin_sdk::tracing::info!(lines = r.lines, text = %r.text, "printed");
        Ok(Response::new(Text { text: format!("printed {}", r.lines) }))
    }
}

/// Writes lines to `stream` as fast as the stream takes them, for ever.
fn flood(stream: &str) {
    let fd = match stream {
        "stdout" => 1,
        "stderr" => 2,
        "sdk" => {
            std::thread::spawn(|| {
                for i in 0u64.. {
                    plugin_sdk::tracing::info!(n = i, "flood record {i}");
                }
            });
            return;
        }
        other => {
            eprintln!("zoo: --flood takes stdout, stderr or sdk, not {other}");
            std::process::exit(2);
        }
    };
    std::thread::spawn(move || {
        // A pipe's worth of numbered lines, written again and again in whole: the cheapest
        // way to keep the pipe full.
        let mut chunk = Vec::new();
        for i in 0.. {
            let line = format!("flood line {i} of the zoo, written as fast as the pipe takes it\n");
            if chunk.len() + line.len() > 64 * 1024 {
                break;
            }
            chunk.extend_from_slice(line.as_bytes());
        }
        loop {
            // SAFETY: writes from a buffer that lives across the call to a descriptor this
            // process keeps open for its life.
            if unsafe { libc::write(fd, chunk.as_ptr().cast(), chunk.len()) } < 0 && errno() != libc::EINTR {
                return;
            }
        }
    });
}

fn main() {
    let _ = INHERITED.set(inherited_fds());
    let mut name = "zoo".to_owned();
    let mut version = "1.0.0".to_owned();
    let mut protocols = vec![plugin_sdk::plugin_proto::PROTOCOL_VERSION];
    let mut init_fail: Option<String> = None;
    let mut descriptors = pb::FILE_DESCRIPTOR_SET.to_vec();
    let mut service = ZooService::default();
    let mut serving = true;
    let mut usr1: Option<plugin_sdk::plugin_proto::signals::Caught> = None;
    let mut describe_echo = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--name" => name = args.next().unwrap_or_default(),
            "--version" => version = args.next().unwrap_or_default(),
            "--protocol" => protocols = vec![args.next().and_then(|v| v.parse().ok()).unwrap_or(0)],
            "--init-fail" => init_fail = args.next(),
            "--not-serving" => serving = false,
            "--usr1-serves" => match plugin_sdk::plugin_proto::signals::Signals::catch(&[libc::SIGUSR1]) {
                Ok(caught) => usr1 = Some(caught),
                Err(e) => {
                    eprintln!("zoo: cannot catch SIGUSR1: {e}");
                    std::process::exit(2);
                }
            },
            "--flood" => flood(&args.next().unwrap_or_default()),
            "--fail-every" => service.fail_every = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--blocking-sleep" => service.blocking_sleep = true,
            // A `log` logger set before `serve`, as `env_logger::init()` would be.
            "--log-logger-first" => {
                if let Err(e) = log::set_logger(&QUIET) {
                    eprintln!("zoo: cannot set a log logger: {e}");
                    std::process::exit(2);
                }
            }
            "--echo-delay-ms" => {
                service.echo_delay = Duration::from_millis(args.next().and_then(|v| v.parse().ok()).unwrap_or(0));
            }
            // Declares a contract that breaks its own (`zoo.v1.Text.text` becomes an
            // int64): a new version a reload must refuse.
            "--breaking-contract" => descriptors = breaking(&descriptors),
            // Describes echo.v1.Echo beside its own services, and serves only its own.
            "--describe-echo-too" => describe_echo = true,
            "--hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            // Starts slowly: waits before its handshake.
            "--start-delay-ms" => std::thread::sleep(Duration::from_millis(number(args.next()))),
            "--exit" => std::process::exit(args.next().and_then(|v| v.parse().ok()).unwrap_or(3)),
            "--die-after-ms" => {
                // Serves, then crashes: a plugin in a crash loop.
                let ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(200);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    std::process::exit(3);
                });
            }
            "--leak-memory" => plugin_integration::leaker::memory(number(args.next())),
            "--leak-fds" => plugin_integration::leaker::fds(number(args.next())),
            "--leak-tasks" => plugin_integration::leaker::tasks(number(args.next())),
            "--sawtooth" => {
                let (rate, ms) = pair(args.next());
                plugin_integration::leaker::sawtooth(rate, Duration::from_millis(ms));
            }
            "--step" => {
                let (kib, ms) = pair(args.next());
                plugin_integration::leaker::step(kib, Duration::from_millis(ms));
            }
            other => {
                eprintln!("zoo: unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    println!("zoo {name} starting");
    let plugin = plugin_sdk::Plugin::new(name, version);
    let plugin = if serving { plugin } else { plugin.not_serving() };
    service.host = plugin.host_channel();
    service.health = Some(plugin.health());
    service.shutdown = Some(plugin.shutdown_signal());
    let health = plugin.health();
    let plugin =
        if describe_echo { plugin.descriptors(plugin_integration::pb::echo::FILE_DESCRIPTOR_SET) } else { plugin };
    plugin
        .descriptors(&descriptors)
        .service(ZooServer::new(service))
        .protocol_versions(&protocols)
        .on_init(move |_ctx| {
            if let Some(msg) = &init_fail {
                return Err(Status::invalid_argument(msg.clone()));
            }
            // The runtime runs by now: SIGUSR1, caught since main began, says SERVING.
            if let Some(caught) = usr1.take() {
                let mut signals = caught.stream().map_err(|e| Status::internal(format!("SIGUSR1: {e}")))?;
                let health = health.clone();
                tokio::spawn(async move {
                    while signals.recv().await.is_ok() {
                        health.set_serving(true).await;
                    }
                });
            }
            Ok(())
        })
        .serve()
}

fn number(arg: Option<String>) -> u64 {
    arg.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// "A:B" as two numbers.
fn pair(arg: Option<String>) -> (u64, u64) {
    let arg = arg.unwrap_or_default();
    let (a, b) = arg.split_once(':').unwrap_or((&arg, "0"));
    (number(Some(a.to_owned())), number(Some(b.to_owned())))
}

/// `encoded` with the type of `zoo.v1.Text.text` changed from string to int64.
fn breaking(encoded: &[u8]) -> Vec<u8> {
    use prost::Message;
    let mut set = prost_types::FileDescriptorSet::decode(encoded).expect("the zoo's own descriptors decode");
    for file in &mut set.file {
        for message in file.message_type.iter_mut().filter(|m| m.name() == "Text") {
            for field in &mut message.field {
                field.set_type(prost_types::field_descriptor_proto::Type::Int64);
            }
        }
    }
    set.encode_to_vec()
}

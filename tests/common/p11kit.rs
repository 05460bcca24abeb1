//! `p11-kit server` as a stand-in for a network HSM: the token (of any family: its own
//! module and environment) is served over a Unix socket to daemons that load p11-kit's
//! client module.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run_ok, Result, TestToken};

/// p11-kit's client module, which forwards PKCS#11 calls to `P11_KIT_SERVER_ADDRESS`.
pub const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// A `p11-kit server` in a process group of its own, so the test can kill it together
/// with the `p11-kit-remote` child it forks per connection (killing only the parent
/// would leave existing connections working).
pub struct P11KitServer(Child);

impl P11KitServer {
    pub fn start(token: &TestToken, socket: &std::path::Path) -> Result<Self> {
        let _ = std::fs::remove_file(socket);
        let child = Command::new("p11-kit")
            .envs(token.env.iter().map(|(k, v)| (k, v)))
            .args(["server", "-f", "-n"])
            .arg(socket)
            .arg("--provider")
            .arg(&token.module)
            .arg(format!("pkcs11:token={}", token.label))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err("p11-kit server did not create its socket".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Self(child))
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: &str) -> Result {
        run_ok(Command::new("kill").args([
            &format!("-{signal}"),
            "--",
            &format!("-{}", self.0.id()),
        ]))?;
        Ok(())
    }

    /// Kills the whole process group: the link to the "network HSM" is gone.
    pub fn kill(mut self) -> Result {
        run_ok(Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]))?;
        self.0.wait()?;
        Ok(())
    }
}

/// A test that ends, or fails, with the server still running stops it here, with the
/// `p11-kit-remote` children of its process group: no server outlives its test.
impl Drop for P11KitServer {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.wait();
        }
    }
}

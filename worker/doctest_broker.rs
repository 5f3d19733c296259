// A real broker for the documentation's examples (included by them, not part of the
// library): a small tree granted to this process's uid, served in-process on a socket in
// a temporary directory, stopped and removed when dropped.
#[allow(dead_code)]
struct DocBroker {
    dir: std::path::PathBuf,
    stopper: fdbroker::Stopper,
    serving: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

#[allow(dead_code)]
impl DocBroker {
    fn start() -> DocBroker {
        use std::os::unix::fs::PermissionsExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("fdbroker-doc-{}-{nanos}", std::process::id()));
        let spool = dir.join("spool");
        std::fs::create_dir_all(spool.join("sub")).expect("doc tree");
        for (name, text) in [("sample.bin", "MZ sample\n"), ("a.bin", "a\n"), ("sub/b.bin", "bb\n")] {
            std::fs::write(spool.join(name), text).expect("doc file");
            std::fs::set_permissions(spool.join(name), std::fs::Permissions::from_mode(0o600))
                .expect("doc mode");
        }
        // SAFETY-free: getuid cannot fail.
        let uid = nix::unistd::getuid().as_raw();
        let text = format!(
            "[[client]]\nname = \"doc\"\nusers = [{uid}]\n  [[client.allow]]\n  path = \"{}/\"\n  access = [\"read\", \"directory\"]\n",
            spool.display()
        );
        let policy = fdbroker_policy::Policy::parse(&text, std::path::Path::new("doc.toml"))
            .expect("doc policy");
        let shared = std::sync::Arc::new(fdbroker::Shared::new(policy, None));
        let listener = fdbroker::Listener::bind(&dir.join("broker.sock"), 0o600, None)
            .expect("doc socket");
        let server = fdbroker::Server::new(
            shared,
            listener,
            &fdbroker::ServeOptions { threads: 2, handle_signals: false },
        )
        .expect("doc server");
        let stopper = server.stopper();
        let serving = Some(std::thread::spawn(move || server.run()));
        DocBroker { dir, stopper, serving }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("broker.sock")
    }

    /// The granted tree.
    fn spool(&self) -> std::path::PathBuf {
        self.dir.join("spool")
    }
}

impl Drop for DocBroker {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(t) = self.serving.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

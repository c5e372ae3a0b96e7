//! Which Blender to run, and how to start a Python script in it.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::error::BlenderError;
use crate::process::{self, OutputLog};

/// Environment variable naming the `blender` executable (or a Python with `bpy`).
pub const ENV_BLENDER: &str = "BLENDFLEET_BLENDER";
/// Environment variable naming a Python interpreter that has the pip `bpy` module.
pub const ENV_BPY_PYTHON: &str = "BLENDFLEET_BPY_PYTHON";

/// How to run Blender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlenderCommand {
    /// A `blender` executable, run as `blender -b --factory-startup -noaudio --python SCRIPT -- ARGS`.
    Executable(PathBuf),
    /// A Python interpreter with the pip `bpy` module, run as `python SCRIPT ARGS`.
    PythonBpy(PathBuf),
}

impl BlenderCommand {
    /// Finds Blender.
    ///
    /// In order: `explicit` (a file whose name starts with `python` is taken as a Python
    /// with `bpy`, anything else as a `blender` executable; a bare name is looked up on
    /// `PATH`); the environment variable `BLENDFLEET_BLENDER` (same rule); the environment
    /// variable `BLENDFLEET_BPY_PYTHON` (always a Python with `bpy`); `blender` on `PATH`.
    /// A configured path that is not an executable file is an error, not a reason to look
    /// further.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, BlenderError> {
        discover_with(explicit, &|name| std::env::var_os(name))
    }

    /// The program that is started: the `blender` executable or the Python interpreter.
    pub fn program(&self) -> &Path {
        match self {
            Self::Executable(path) | Self::PythonBpy(path) => path,
        }
    }

    /// The Blender version, e.g. `3.4.1`.
    pub async fn version(&self) -> Result<String, BlenderError> {
        match self {
            Self::Executable(path) => {
                let mut command = Command::new(path);
                command.args(["-b", "--factory-startup", "--version"]);
                self.apply_environment(&mut command, &[]);
                let output = command
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output()
                    .await
                    .map_err(|source| BlenderError::Spawn {
                        program: path.clone(),
                        source,
                    })?;
                let stdout = String::from_utf8_lossy(&output.stdout);
                parse_version_output(&stdout).ok_or_else(|| BlenderError::Blender {
                    context: format!("`{} --version` printed no version", path.display()),
                    message: stdout.trim().to_owned(),
                    output: String::from_utf8_lossy(&output.stderr)
                        .lines()
                        .map(str::to_owned)
                        .collect(),
                })
            }
            Self::PythonBpy(_) => {
                let result = crate::oneshot::run_worker_mode(
                    self,
                    "version",
                    &serde_json::json!({}),
                    "Blender could not report its version".into(),
                )
                .await?;
                result["blender_version"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| BlenderError::Protocol(result.to_string()))
            }
        }
    }

    /// A command that runs the Python `script` in this Blender, with `args` after it
    /// (`sys.argv` after `--` inside Blender, `sys.argv[1:]` in a plain Python), in
    /// background mode with factory settings. Standard input is closed; standard output
    /// and error are inherited unless the caller changes them.
    pub fn python_command(&self, script: &Path, args: &[OsString]) -> Command {
        self.script_command(script, args, &[])
    }

    pub(crate) fn script_command(
        &self,
        script: &Path,
        args: &[OsString],
        extra_env: &[(String, String)],
    ) -> Command {
        let mut command = Command::new(self.program());
        match self {
            Self::Executable(_) => {
                command
                    .args(["-b", "--factory-startup", "-noaudio"])
                    .args(["--python-exit-code", "1", "--python"])
                    .arg(script)
                    .arg("--")
                    .args(args);
            }
            Self::PythonBpy(_) => {
                command.arg("-u").arg(script).args(args);
            }
        }
        self.apply_environment(&mut command, extra_env);
        command.stdin(Stdio::null());
        command
    }

    /// Extra environment, then the `PATH` fix for Debian's Blender (see [`system_python_path`]).
    fn apply_environment(&self, command: &mut Command, extra_env: &[(String, String)]) {
        let mut path = std::env::var_os("PATH");
        for (name, value) in extra_env {
            if name == "PATH" {
                path = Some(value.into());
            }
            command.env(name, value);
        }
        if let Self::Executable(program) = self {
            if let Some(fixed) = system_python_path(program, path.as_deref()) {
                command.env("PATH", fixed);
            }
        }
    }

    /// Runs `script` with `args` to completion, collecting its output, for callers that
    /// need Blender for something this crate does not wrap. Returns the exit status and
    /// the last lines of output.
    pub async fn run_script(
        &self,
        script: &Path,
        args: &[OsString],
    ) -> Result<(std::process::ExitStatus, Vec<String>), BlenderError> {
        let output = OutputLog::new();
        let mut spawned = process::spawn(
            self.script_command(script, args, &[]),
            self.program(),
            &output,
        )
        .await?;
        let status = spawned.wait().await?;
        Ok((status, output.tail(usize::MAX)))
    }
}

/// Debian's `blender` loads its Python standard library from the first `python3.x` on
/// `PATH`; a pyenv `versions/*/bin` directory ahead of `/usr/bin` makes `import ssl` and
/// friends fail inside Blender. For an executable that lives in `/usr/bin`, the child's
/// `PATH` starts with `/usr/bin:/bin`. Returns the `PATH` to set, or `None` to leave it.
pub(crate) fn system_python_path(program: &Path, path: Option<&OsStr>) -> Option<OsString> {
    let resolved = program
        .canonicalize()
        .unwrap_or_else(|_| program.to_owned());
    let in_usr_bin = resolved.parent() == Some(Path::new("/usr/bin"))
        || program.parent() == Some(Path::new("/usr/bin"));
    if !in_usr_bin {
        return None;
    }
    let mut fixed = OsString::from("/usr/bin:/bin");
    if let Some(rest) = path.filter(|p| !p.is_empty()) {
        fixed.push(":");
        fixed.push(rest);
    }
    Some(fixed)
}

/// [`BlenderCommand::discover`] with the environment given as a lookup function.
pub(crate) fn discover_with(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<BlenderCommand, BlenderError> {
    let path_var = env("PATH");
    let configured = |value: &Path, origin: &str| -> Result<PathBuf, BlenderError> {
        resolve_program(value, path_var.as_deref()).ok_or_else(|| BlenderError::NotExecutable {
            path: value.to_owned(),
            origin: origin.to_owned(),
        })
    };
    if let Some(path) = explicit {
        return Ok(classify(configured(path, "the command line")?));
    }
    if let Some(value) = env(ENV_BLENDER).filter(|v| !v.is_empty()) {
        let origin = format!("`{ENV_BLENDER}`");
        return Ok(classify(configured(Path::new(&value), &origin)?));
    }
    if let Some(value) = env(ENV_BPY_PYTHON).filter(|v| !v.is_empty()) {
        let origin = format!("`{ENV_BPY_PYTHON}`");
        return Ok(BlenderCommand::PythonBpy(configured(
            Path::new(&value),
            &origin,
        )?));
    }
    find_on_path("blender", path_var.as_deref())
        .map(BlenderCommand::Executable)
        .ok_or(BlenderError::NotFound)
}

/// A Python interpreter (`python`, `python3`, `python3.11`, ...) or else a `blender` executable.
fn classify(path: PathBuf) -> BlenderCommand {
    let is_python = path
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.starts_with("python"));
    if is_python {
        BlenderCommand::PythonBpy(path)
    } else {
        BlenderCommand::Executable(path)
    }
}

/// A path with a directory part must be an executable file; a bare name is looked up on `PATH`.
fn resolve_program(value: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if value.components().count() == 1 && !value.is_absolute() {
        if let Some(found) = find_on_path(value.as_os_str(), path_var) {
            return Some(found);
        }
    }
    is_executable_file(value).then(|| value.to_owned())
}

fn find_on_path(name: impl AsRef<OsStr>, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name.as_ref()))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The version from `blender --version`: its first line reads `Blender 3.4.1` or
/// `Blender 4.5.0 LTS`.
pub(crate) fn parse_version_output(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("Blender ")?;
        let version = rest.split_whitespace().next()?;
        let looks_like_version = version.split('.').count() >= 2
            && version
                .split('.')
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
        looks_like_version.then(|| version.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt as _;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs_err::write(&path, "#!/bin/sh\n").expect("write");
        fs_err::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn discover_in(
        explicit: Option<&Path>,
        vars: &[(&str, &OsStr)],
    ) -> Result<BlenderCommand, BlenderError> {
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        discover_with(explicit, &|name| vars.get(name).cloned())
    }

    #[test]
    fn explicit_path_wins_and_is_classified_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blender = executable(dir.path(), "blender");
        let python = executable(dir.path(), "python3.11");
        let path = dir.path().as_os_str();
        let env = [("PATH", path), (ENV_BLENDER, python.as_os_str())];
        assert_eq!(
            discover_in(Some(&blender), &env).expect("found"),
            BlenderCommand::Executable(blender.clone())
        );
        assert_eq!(
            discover_in(Some(&python), &env).expect("found"),
            BlenderCommand::PythonBpy(python.clone())
        );
        // A bare name is looked up on PATH.
        assert_eq!(
            discover_in(Some(Path::new("blender")), &env).expect("found"),
            BlenderCommand::Executable(blender)
        );
    }

    #[test]
    fn environment_then_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blender = executable(dir.path(), "blender");
        let custom = executable(dir.path(), "blender-4.5");
        let python = executable(dir.path(), "python");
        let path = dir.path().as_os_str();
        assert_eq!(
            discover_in(
                None,
                &[
                    ("PATH", path),
                    (ENV_BLENDER, custom.as_os_str()),
                    (ENV_BPY_PYTHON, python.as_os_str())
                ]
            )
            .expect("found"),
            BlenderCommand::Executable(custom)
        );
        assert_eq!(
            discover_in(
                None,
                &[
                    ("PATH", path),
                    (ENV_BLENDER, OsStr::new("")),
                    (ENV_BPY_PYTHON, python.as_os_str())
                ]
            )
            .expect("found"),
            BlenderCommand::PythonBpy(python)
        );
        assert_eq!(
            discover_in(None, &[("PATH", path)]).expect("found"),
            BlenderCommand::Executable(blender)
        );
    }

    #[test]
    fn missing_blender_explains_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error =
            discover_in(None, &[("PATH", dir.path().as_os_str())]).expect_err("nothing there");
        assert!(matches!(error, BlenderError::NotFound));
        let text = error.to_string();
        assert!(text.contains("apt-get install blender"), "{text}");
        assert!(
            text.contains(ENV_BLENDER) && text.contains(ENV_BPY_PYTHON),
            "{text}"
        );
    }

    #[test]
    fn configured_path_must_be_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("blender");
        fs_err::write(&plain, "not executable").expect("write");
        let missing = dir.path().join("nope/blender");
        let error = discover_in(None, &[(ENV_BLENDER, missing.as_os_str())]).expect_err("missing");
        assert!(error.to_string().contains("BLENDFLEET_BLENDER"), "{error}");
        assert!(discover_in(Some(&plain), &[]).is_err());
    }

    #[test]
    fn version_lines() {
        assert_eq!(
            parse_version_output("Blender 3.4.1\n\tbuild date: x\n").as_deref(),
            Some("3.4.1")
        );
        assert_eq!(
            parse_version_output("noise\nBlender 4.5.0 LTS\n\tbuild hash: abc\n").as_deref(),
            Some("4.5.0")
        );
        assert_eq!(parse_version_output("Blender quit\n"), None);
        assert_eq!(parse_version_output(""), None);
    }

    #[test]
    fn path_fix_only_for_usr_bin() {
        let fixed = system_python_path(
            Path::new("/usr/bin/blender"),
            Some(OsStr::new("/root/.pyenv/versions/3.11.7/bin:/usr/bin")),
        )
        .expect("fixed");
        assert_eq!(
            fixed,
            OsString::from("/usr/bin:/bin:/root/.pyenv/versions/3.11.7/bin:/usr/bin")
        );
        assert_eq!(
            system_python_path(Path::new("/usr/bin/blender"), None),
            Some(OsString::from("/usr/bin:/bin"))
        );
        assert_eq!(
            system_python_path(
                Path::new("/opt/blender-4.5/blender"),
                Some(OsStr::new("/x"))
            ),
            None
        );
    }
}

//! Distributed imports on Apache Ballista (feature `ballista`): the session
//! an import runs in on a cluster, the scheduler and executor processes with
//! the import's planner and codecs built in, and what the cluster tells of a
//! finished import. docs/DISTRIBUTED.md says how the pieces fit.
//!
//! ```text
//!  client (ImportBuilder::on_cluster)   scheduler                 executors
//!  hash files, read the table's    ──►  ImportQueryPlanner:   ──► stage 1: source + coerce
//!  shape, pick the key strategy,        logical -> physical,      stage 2: the table's keys,
//!  ImportNode (settings + recipe)       stages at the shuffles             read once (beside 1)
//!                                                                 stage 3: duplicate check
//!                                                                          per key partition
//!                                                                 stage 4: merge + sink (one
//!  report: the job's counters + the  ◄──────────────────────────  task: lock, write, commit
//!  committed import_history row                                   with the import's id)
//! ```
//!
//! Credentials never travel: a plan names its database by the URL without
//! password, and each executor reaches it with the URL it was given
//! (`--database`, `ATLAS_DATABASES`), through a [`DatabaseRunFactory`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::config::{
    BALLISTA_ADAPTIVE_PLANNER_ENABLED, BALLISTA_SHUFFLE_COMPRESSION_CODEC,
    BALLISTA_SHUFFLE_SORT_BASED_MEMORY_LIMIT_PER_TASK_BYTES,
};
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{GetJobMetricsParams, operator_metric};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use datafusion::execution::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::LogicalPlanNode;

pub use crate::codec::{ImportLogicalCodec, ImportPhysicalCodec};
use crate::error::{AtlasError, Result};
pub use crate::import::DatabaseRunFactory;
use crate::logical::ImportQueryPlanner;
use crate::physical::ImportRuns;

/// The port a scheduler listens on unless told otherwise.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Ballista's setting of how many partitions one task may run: one, so a
/// retried task redoes one whole partition.
const MAX_PARTITIONS_PER_TASK: &str = "ballista.scheduler.max_partitions_per_task";

/// Bytes of rows a task's shuffle writer holds before it spills them.
const SHUFFLE_MEMORY_PER_TASK: usize = 64 << 20;

/// Where a cluster session's scheduler answers (for the job's counters).
#[derive(Debug, Clone)]
struct SchedulerEndpoint(String);

/// The session configuration of every process of a cluster: Ballista's,
/// with the import codecs, and the settings that keep an import's attempts
/// unambiguous (no adaptive re-planning, one partition per task, so a task
/// that is retried is one partition's work done again, never a share of it).
pub fn cluster_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(ImportLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(ImportPhysicalCodec::default()))
        .set_bool(BALLISTA_ADAPTIVE_PLANNER_ENABLED, false)
        // One hash partition per check task: a task keeps the share of the
        // table's keys its partition needs (merged partitions would need
        // several shares).
        .with_ballista_coalesce_enabled(false)
        .set_usize(MAX_PARTITIONS_PER_TASK, 1)
        // The shuffle writer holds this much of a task's rows before it
        // spills them to its file (Ballista's default, 256 MB, is more than
        // a whole local import holds).
        .set_usize(
            BALLISTA_SHUFFLE_SORT_BASED_MEMORY_LIMIT_PER_TASK_BYTES,
            SHUFFLE_MEMORY_PER_TASK,
        )
        // An import's rows cross two shuffles and its keys one; compressing
        // them (Ballista's default, LZ4) costs more CPU than it saves where
        // executors share machines or a fast network.
        .set_str(BALLISTA_SHUFFLE_COMPRESSION_CODEC, "none")
}

/// The state that plans imports (the scheduler's): Ballista's session with
/// the import planner.
pub fn planning_state(config: SessionConfig) -> Result<SessionState> {
    let state = ballista_core::utils::default_session_builder(config)
        .map_err(AtlasError::from_datafusion)?;
    Ok(SessionStateBuilder::new_from_existing(state)
        .with_query_planner(Arc::new(ImportQueryPlanner))
        .build())
}

/// A Ballista scheduler and executor inside this process (Ballista's
/// standalone mode), importing into the databases of `factory`: the same
/// stages, codecs and runs as a cluster's, on one machine.
pub async fn standalone_context(factory: DatabaseRunFactory) -> Result<SessionContext> {
    let runs = Arc::new(ImportRuns::with_factory(Arc::new(factory)));
    let state = planning_state(cluster_config().with_extension(runs))?;
    let scheduler = ballista_scheduler::standalone::new_standalone_scheduler_from_state(&state)
        .await
        .map_err(|e| AtlasError::Usage(format!("starting the in-process scheduler: {e}")))?;
    let url = format!("http://localhost:{}", scheduler.port());
    let client = connect_scheduler(&url).await?;
    let parallelism = state.config().ballista_standalone_parallelism();
    ballista_executor::new_standalone_executor_from_state(client, parallelism, &state)
        .await
        .map_err(|e| AtlasError::Usage(format!("starting the in-process executor: {e}")))?;
    client_context(state, url)
}

/// A session whose imports run on the cluster of the scheduler at `url`
/// (`df://HOST:PORT`, or `http://HOST:PORT`).
pub async fn remote_context(url: &str) -> Result<SessionContext> {
    let endpoint = scheduler_url(url)?;
    // Fail here, clearly, when nothing answers.
    connect_scheduler(&endpoint).await?;
    client_context(planning_state(cluster_config())?, endpoint)
}

fn client_context(state: SessionState, url: String) -> Result<SessionContext> {
    let config = state
        .config()
        .clone()
        .with_extension(Arc::new(SchedulerEndpoint(url.clone())));
    let state = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build()
        .upgrade_for_ballista(url)
        .map_err(AtlasError::from_datafusion)?;
    Ok(SessionContext::new_with_state(state))
}

/// The scheduler's gRPC address of a `--cluster` URL.
fn scheduler_url(url: &str) -> Result<String> {
    let parsed =
        url::Url::parse(url).map_err(|e| AtlasError::Usage(format!("cluster URL '{url}': {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| AtlasError::Usage(format!("cluster URL '{url}' names no host")))?;
    Ok(format!(
        "http://{host}:{}",
        parsed.port().unwrap_or(DEFAULT_SCHEDULER_PORT)
    ))
}

async fn connect_scheduler(url: &str) -> Result<SchedulerGrpcClient<tonic::transport::Channel>> {
    let mut last = None;
    // An in-process scheduler may take a moment to listen.
    for _ in 0..50 {
        match SchedulerGrpcClient::connect(url.to_string()).await {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(AtlasError::Usage(format!(
        "no Ballista scheduler answers at {url}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// The counters of the finished job that ran `plan` (a Ballista
/// `DistributedQueryExec`), summed by name over every operator of every
/// stage; empty when `plan` did not run on a cluster.
pub(crate) async fn job_counters(
    plan: &Arc<dyn ExecutionPlan>,
    config: &SessionConfig,
) -> Result<HashMap<String, u64>> {
    use ballista_core::execution_plans::DistributedQueryExec;
    let mut sums = HashMap::new();
    let (Some(exec), Some(endpoint)) = (
        plan.downcast_ref::<DistributedQueryExec<LogicalPlanNode>>(),
        config.get_extension::<SchedulerEndpoint>(),
    ) else {
        return Ok(sums);
    };
    let Some(job_id) = exec.job_id() else {
        return Ok(sums);
    };
    let mut client = connect_scheduler(&endpoint.0).await?;
    let metrics = client
        .get_job_metrics(GetJobMetricsParams {
            job_id: job_id.to_string(),
        })
        .await
        .map_err(|e| AtlasError::Usage(format!("reading the job's metrics: {e}")))?
        .into_inner();
    for operator in metrics.stages.iter().flat_map(|stage| &stage.operators) {
        for metric in &operator.metrics {
            if let Some(operator_metric::Metric::Count(count)) = &metric.metric {
                *sums.entry(count.name.clone()).or_insert(0) += count.value;
            }
        }
    }
    Ok(sums)
}

/// What a scheduler process is told.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The address it listens on.
    pub bind: SocketAddr,
    /// How often a failed task is tried again before its job fails.
    pub task_max_failures: usize,
    /// Seconds without a heartbeat after which an executor counts as lost
    /// (its tasks run again elsewhere).
    pub executor_timeout_seconds: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], DEFAULT_SCHEDULER_PORT)),
            task_max_failures: 4,
            executor_timeout_seconds: 180,
        }
    }
}

/// Runs a Ballista scheduler that plans imports, until the process ends.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    let mut config = SchedulerConfig::default();
    config.bind_host = options.bind.ip().to_string();
    config.bind_port = options.bind.port();
    config.external_host = options.bind.ip().to_string();
    config.task_max_failures = options.task_max_failures;
    config.executor_timeout_seconds = options.executor_timeout_seconds;
    config.expire_dead_executor_interval_seconds = options.executor_timeout_seconds.clamp(1, 15);
    config.no_executors_grace_period_seconds = options.executor_timeout_seconds;
    config.override_config_producer = Some(Arc::new(cluster_config));
    config.override_session_builder = Some(Arc::new(|config: SessionConfig| {
        planning_state(config).map_err(datafusion::error::DataFusionError::from)
    }));
    config.override_logical_codec = Some(Arc::new(ImportLogicalCodec::default()));
    config.override_physical_codec = Some(Arc::new(ImportPhysicalCodec::default()));
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| AtlasError::Usage(format!("starting the scheduler: {e}")))?;
    ballista_scheduler::scheduler_process::start_server(cluster, options.bind, Arc::new(config))
        .await
        .map_err(|e| AtlasError::Usage(format!("the scheduler stopped: {e}")))
}

/// What an executor process is told.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler it works for.
    pub scheduler: SocketAddr,
    /// The address its Flight service (shuffle data) listens on.
    pub bind: SocketAddr,
    /// The address its gRPC service listens on (port 0: the Flight port + 1).
    pub grpc_port: u16,
    /// Tasks it runs at once.
    pub slots: usize,
    /// The databases it imports into, with their credentials.
    pub databases: Vec<String>,
    /// Where it keeps shuffle files.
    pub work_dir: Option<String>,
}

/// Runs a Ballista executor that runs import stages, until the process ends.
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    let factory = DatabaseRunFactory::connect(&options.databases).await?;
    let runs = Arc::new(ImportRuns::with_factory(Arc::new(factory)));
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        external_host: Some(options.bind.ip().to_string()),
        port: options.bind.port(),
        grpc_port: if options.grpc_port == 0 {
            options.bind.port().saturating_add(1)
        } else {
            options.grpc_port
        },
        scheduler_host: options.scheduler.ip().to_string(),
        scheduler_port: options.scheduler.port(),
        vcores: options.slots.max(1),
        // Often enough for a scheduler told to give up on a silent
        // executor after a few seconds (`--executor-timeout`).
        executor_heartbeat_interval_seconds: 2,
        work_dir: options.work_dir,
        override_config_producer: Some(Arc::new(move || {
            cluster_config().with_extension(Arc::clone(&runs))
        })),
        override_logical_codec: Some(Arc::new(ImportLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(ImportPhysicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| AtlasError::Usage(format!("the executor stopped: {e}")))
}

/// The stages a cluster runs `logical` in, as its scheduler splits them
/// (planned here with the scheduler's planner and `config`): each stage with
/// its tasks, what it does for the import, where its rows go, and its plan.
/// `EXPLAIN` on a cluster prints this after the one-process plan.
pub(crate) async fn explain_stages(config: SessionConfig, logical: &LogicalPlan) -> Result<String> {
    use ballista_core::execution_plans::UnresolvedShuffleExec;
    use ballista_scheduler::planner::{
        DefaultDistributedPlanner, DistributedPlanner, find_unresolved_shuffles,
    };
    use std::fmt::Write;

    let state = planning_state(config)?;
    let plan = state
        .create_physical_plan(logical)
        .await
        .map_err(AtlasError::from_datafusion)?;
    let stages = DefaultDistributedPlanner::new()
        .plan_query_stages(
            &ballista_core::JobId::new("explain"),
            plan,
            state.config().options(),
        )
        .map_err(planning_error)?;
    let plans: Vec<Arc<dyn ExecutionPlan>> = stages
        .iter()
        .map(|stage| Arc::clone(stage) as Arc<dyn ExecutionPlan>)
        .collect();
    // Which stage reads each stage's output.
    let mut readers = HashMap::new();
    for (stage, plan) in stages.iter().zip(&plans) {
        let inputs = find_unresolved_shuffles(plan).map_err(planning_error)?;
        for UnresolvedShuffleExec { stage_id, .. } in inputs {
            readers.insert(stage_id, stage.stage_id());
        }
    }
    let mut text =
        String::from("distributed_plan (Ballista: each stage's tasks run on the executors)\n");
    for (stage, plan) in stages.iter().zip(&plans) {
        let tasks = stage.input_partition_count();
        let output = match (
            stage.shuffle_output_partitioning(),
            readers.get(&stage.stage_id()),
        ) {
            (Some(partitioning), Some(reader)) => format!(
                "its rows shuffled into {} partitions ({partitioning}) for stage {reader}",
                partitioning.partition_count()
            ),
            (None, Some(reader)) => format!("its partitions read by stage {reader}"),
            (_, None) => "its result (the rows written) goes to the client".to_string(),
        };
        let _ = writeln!(
            text,
            "stage {}: {tasks} task{}{}; {output}",
            stage.stage_id(),
            if tasks == 1 { "" } else { "s" },
            stage_role(plan),
        );
        let _ = write!(
            text,
            "{}",
            datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
        );
    }
    Ok(text)
}

fn planning_error(e: ballista_core::error::BallistaError) -> AtlasError {
    AtlasError::Internal(format!("cutting the plan into stages: {e}"))
}

/// What a stage does for the import, from the operators it holds.
fn stage_role(plan: &Arc<dyn ExecutionPlan>) -> &'static str {
    fn holds(plan: &Arc<dyn ExecutionPlan>, name: &str) -> bool {
        plan.name() == name || plan.children().into_iter().any(|child| holds(child, name))
    }
    if holds(plan, "DataSinkExec") {
        " on one executor, the sink: it takes the table's lock, writes every row and \
         commits with the import's id, reaching the database with that executor's own \
         credentials"
    } else if holds(plan, "DuplicateCheckExec") {
        ", the duplicate check, one per key partition"
    } else if holds(plan, "CoerceExec") {
        ", reading the source and converting its values"
    } else if holds(plan, "ExistingKeysExec") {
        ", reading the table's keys once (each check task receives its share)"
    } else {
        ""
    }
}

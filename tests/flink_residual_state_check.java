/*
 * Drives the job-server jar's own StateAndTimerBundleCheckpointHandler through many SDF
 * self-checkpoints, the way a followed Kafka read drives it on Flink, and prints what it did to
 * state as JSON for tests/test_flink_jobserver_jar.py to judge. Run in Java's single-file source
 * mode against the built jar: `java -cp JAR flink_residual_state_check.java N`.
 *
 * Flink's keyed state backend keeps one table per state name for the job's lifetime, so the
 * figure that matters is how many distinct state names the handler used; a timer's firing must
 * then hand back each residual exactly as it was stored and leave no entry behind.
 */
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.BundleApplication;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.DelayedBundleApplication;
import org.apache.beam.model.fnexecution.v1.BeamFnApi.ProcessBundleResponse;
import org.apache.beam.runners.core.InMemoryStateInternals;
import org.apache.beam.runners.core.InMemoryTimerInternals;
import org.apache.beam.runners.core.StateInternals;
import org.apache.beam.runners.core.StateNamespace;
import org.apache.beam.runners.core.StateNamespaces;
import org.apache.beam.runners.core.StateTag;
import org.apache.beam.runners.core.TimerInternals.TimerData;
import org.apache.beam.runners.fnexecution.control.BundleCheckpointHandlers.StateAndTimerBundleCheckpointHandler;
import org.apache.beam.sdk.coders.Coder;
import org.apache.beam.sdk.coders.StringUtf8Coder;
import org.apache.beam.sdk.state.State;
import org.apache.beam.sdk.state.StateContext;
import org.apache.beam.sdk.transforms.windowing.BoundedWindow;
import org.apache.beam.sdk.transforms.windowing.GlobalWindow;
import org.apache.beam.sdk.util.CoderUtils;
import org.apache.beam.sdk.util.WindowedValue;
import org.apache.beam.vendor.grpc.v1p60p1.com.google.protobuf.ByteString;

public class ResidualStateCheck {

  /** The state internals of one key, recording every state name asked for. */
  static class RecordingStateInternals implements StateInternals {
    final StateInternals inner = InMemoryStateInternals.forKey("key");
    final TreeSet<String> stateIds = new TreeSet<>();

    @Override
    public Object getKey() {
      return inner.getKey();
    }

    @Override
    public <T extends State> T state(StateNamespace namespace, StateTag<T> tag, StateContext<?> c) {
      stateIds.add(tag.getId());
      return inner.state(namespace, tag, c);
    }
  }

  static ProcessBundleResponse selfCheckpoint(byte[] residual) {
    return ProcessBundleResponse.newBuilder()
        .addResidualRoots(
            DelayedBundleApplication.newBuilder()
                .setApplication(
                    BundleApplication.newBuilder()
                        .setTransformId("read")
                        .setInputId("in")
                        .setElement(ByteString.copyFrom(residual))))
        .build();
  }

  static String quoted(Object value) {
    return "\"" + value + "\"";
  }

  public static void main(String[] args) throws Exception {
    int checkpoints = Integer.parseInt(args[0]);
    Coder<WindowedValue<String>> coder =
        WindowedValue.getFullCoder(StringUtf8Coder.of(), GlobalWindow.Coder.INSTANCE);
    InMemoryTimerInternals timers = new InMemoryTimerInternals();
    RecordingStateInternals state = new RecordingStateInternals();
    StateAndTimerBundleCheckpointHandler<String> handler =
        new StateAndTimerBundleCheckpointHandler<>(
            key -> timers, key -> state, coder, GlobalWindow.Coder.INSTANCE);

    List<String> stored = new ArrayList<>();
    for (int i = 0; i < checkpoints; i++) {
      String residual = "partition-0@" + i;
      stored.add(residual);
      handler.onCheckpoint(
          selfCheckpoint(CoderUtils.encodeToByteArray(coder, WindowedValue.valueInGlobalWindow(residual))));
    }
    int stateIdsAfterCheckpoints = state.stateIds.size();

    timers.advanceProcessingTime(BoundedWindow.TIMESTAMP_MAX_VALUE);
    List<String> fired = new ArrayList<>();
    TimerData timer;
    while ((timer = timers.removeNextProcessingTimer()) != null) {
      fired.add(
          StateAndTimerBundleCheckpointHandler.takeResidual(
                  state, timer.getNamespace(), timer.getTimerId(), coder)
              .getValue());
    }
    StateNamespace global = StateNamespaces.window(GlobalWindow.Coder.INSTANCE, GlobalWindow.INSTANCE);
    boolean emptyAfterFiring =
        state.state(global, StateAndTimerBundleCheckpointHandler.residualsTag(coder)).isEmpty().read();

    List<String> ids = new ArrayList<>();
    state.stateIds.forEach(id -> ids.add(quoted(id)));
    System.out.println(
        "{\"state_ids\": " + ids
            + ", \"state_ids_after_checkpoints\": " + stateIdsAfterCheckpoints
            + ", \"stored_equals_fired\": " + new TreeSet<>(stored).equals(new TreeSet<>(fired))
            + ", \"fired\": " + fired.size()
            + ", \"empty_after_firing\": " + emptyAfterFiring + "}");
  }
}

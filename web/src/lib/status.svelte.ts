/** What a page's last action said: a notice when it worked, an error when it did not. */
export class ActionStatus {
  message = $state('');
  error = $state('');

  /** Runs `action`, clearing the last status first; `done` is the notice on success. */
  run = async (action: () => Promise<void>, done = ''): Promise<void> => {
    this.error = '';
    this.message = '';
    try {
      await action();
      this.message = done;
    } catch (e) {
      this.error = (e as Error).message;
    }
  };
}

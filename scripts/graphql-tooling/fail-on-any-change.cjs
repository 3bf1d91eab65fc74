// Inspector's completion handler for `diff --onComplete`: by default it fails only on breaking
// changes; the checked-in schema.graphql must match the live server exactly, so any change at
// all (breaking, dangerous or safe) fails.
module.exports = ({ breakingChanges, dangerousChanges, nonBreakingChanges }) => {
  const changes = breakingChanges.length + dangerousChanges.length + nonBreakingChanges.length;
  if (changes > 0) {
    console.error(`schema.graphql and the live schema differ: ${changes} change(s)`);
    process.exit(1);
  }
};
